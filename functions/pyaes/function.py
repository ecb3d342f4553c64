"""pyaes (MITOSIS): AES-CTR encryption and decryption of a 22,000-character
message in pure Python (the pyaes package).

Initialisation imports pyaes and makes the message and the key from a fixed
seed; the handler encrypts, decrypts, checks the round trip and prints a
digest of the ciphertext.
"""

# The wrapper first: its flags, timing lines and prepare (mitosis_wrapper).
from mitosis_wrapper import *  # noqa: E402,F401,F403

import hashlib
import random

import pyaes


LENGTH = 22000
_rng = random.Random(22000)
MESSAGE = ''.join(_rng.choice('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ') for _ in range(LENGTH))
KEY = bytes(_rng.randrange(256) for _ in range(16))


@tick_execution_time
def handler():
    encrypt = pyaes.AESModeOfOperationCTR(KEY, counter=pyaes.Counter(initial_value=1))
    ciphertext = encrypt.encrypt(MESSAGE)
    decrypt = pyaes.AESModeOfOperationCTR(KEY, counter=pyaes.Counter(initial_value=1))
    plaintext = decrypt.decrypt(ciphertext)
    assert plaintext.decode() == MESSAGE
    print(f"result: {len(ciphertext)} bytes, sha256 {hashlib.sha256(ciphertext).hexdigest()[:16]}", flush=True)


@mitosis_bench
def bench():
    handler()


if __name__ == '__main__':
    bench()
