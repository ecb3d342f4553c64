"""chameleon (MITOSIS): render a 200 x 200 HTML table with a Chameleon page
template.

Initialisation imports Chameleon and compiles the template; the handler
renders it for a 200-row, 200-column table and prints a digest of the HTML.
"""

# The wrapper first: its flags, timing lines and prepare (mitosis_wrapper).
from mitosis_wrapper import *  # noqa: E402,F401,F403

import hashlib

from chameleon import PageTemplate


BIGTABLE_ZPT = """\
<table xmlns="http://www.w3.org/1999/xhtml"
xmlns:tal="http://xml.zope.org/namespaces/tal">
<tr tal:repeat="row python: options['table']">
<td tal:repeat="c python: row.values()">
<span tal:define="d python: c + 1"
tal:attributes="class python: 'column-' + str(d)"
tal:content="python: d" />
</td>
</tr>
</table>"""

ROWS = 200
COLUMNS = 200
TEMPLATE = PageTemplate(BIGTABLE_ZPT)
TABLE = [{f"c{c}": r * COLUMNS + c for c in range(COLUMNS)} for r in range(ROWS)]


@tick_execution_time
def handler():
    html = TEMPLATE.render(options={'table': TABLE})
    assert html.count('<tr>') == ROWS and html.count('<td>') == ROWS * COLUMNS
    print(f"result: {len(html)} chars, sha256 {hashlib.sha256(html.encode()).hexdigest()[:16]}", flush=True)


@mitosis_bench
def bench():
    handler()


if __name__ == '__main__':
    bench()
