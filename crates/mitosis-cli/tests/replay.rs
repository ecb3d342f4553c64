//! `mitosis replay`: its exit statuses, and a whole run against a small
//! HTTP/1.1 stand-in for the gateway on 127.0.0.1 (std threads).

#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};

use mitosis_testkit::TestDir;

fn mitosis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mitosis")).arg("replay").args(args).output().expect("run mitosis")
}

fn text(o: &Output) -> String {
    format!("status {:?}\nstdout:\n{}\nstderr:\n{}", o.status.code(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn exit_statuses() {
    let closed = format!("http://127.0.0.1:{}", closed_port());
    let cases: [(&[&str], i32, &str); 6] = [
        (&["--gateway", &closed, "--synthetic", "rate=2", "--duration", "1"], 69, "unreachable"),
        (&["--gateway", &closed, "--trace", "/nonexistent/trace.csv", "--duration", "1"], 66, "cannot read trace file"),
        (&["--gateway", &closed, "--synthetic", "rate=fast", "--duration", "1"], 64, "rate="),
        (&["--gateway", &closed, "--synthetic", "spike:peak=3", "--duration", "1"], 64, "function= is required"),
        (&["--gateway", "127.0.0.1:1", "--synthetic", "rate=1", "--duration", "1"], 64, "not http://HOST:PORT"),
        (&["--gateway", &closed, "--duration", "1"], 64, "--trace"),
    ];
    for (args, code, message) in cases {
        let out = mitosis(args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains(message), "{args:?}: {}", text(&out));
    }
}

/// Answers every POST with 200 and `x-mitosis-start: warm`, GET /metrics
/// with 3 MiB of instances and 1 MiB of seeds; keep-alive.
fn serve(listener: TcpListener) {
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || answer_all(stream));
    }
}

fn answer_all(stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim().is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (extra, reply) = if request_line.starts_with("GET /metrics") {
            ("", "mitosis_instance_memory_bytes{function=\"json\"} 3145728\nmitosis_seed_memory_bytes{function=\"json\"} 1048576\n".to_string())
        } else {
            ("x-mitosis-start: warm\r\n", "{\"ok\":true}".to_string())
        };
        let response = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{extra}\r\n{reply}", reply.len());
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn a_run_writes_its_records_summary_and_charts() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let gateway = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || serve(listener));
    let dir = TestDir::new("replay-cli");
    let out_dir = dir.path().join("out");
    let spec = "spike:function=json,base=5,peak=20,at=0.5,for=0.5,seed=1";
    let out = mitosis(&["--gateway", &gateway, "--synthetic", spec, "--duration", "1.5", "--json", "--label", "fork", "--out", out_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    let run = &summary["runs"][0];
    let requests = run["requests"].as_u64().unwrap();
    assert!(requests > 0);
    assert_eq!(run["overall"]["errors"], 0, "{}", text(&out));
    assert_eq!(run["starts"]["warm"].as_u64(), Some(requests));
    assert_eq!(run["peak_memory_mib"].as_f64(), Some(4.0));

    let records = std::fs::read_to_string(out_dir.join("fork-records.jsonl")).unwrap();
    assert_eq!(records.lines().count() as u64, requests, "one record per request");
    for line in records.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!((r["function"].as_str(), r["status"].as_u64(), r["start"].as_str()), (Some("json"), Some(200), Some("warm")), "{line}");
    }
    for file in ["fork-memory.csv", "summary.json", "latency-cdf.svg", "memory.svg"] {
        assert!(out_dir.join(file).is_file(), "{file} missing: {}", text(&out));
    }
}
