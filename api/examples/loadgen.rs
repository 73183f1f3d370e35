//! Open-loop HTTP load generator for the `isco-dag serve` benchmarks (`bench/serve.sh`).
//!
//! Sends `--rate` requests per second for `--duration` seconds over `--connections`
//! keep-alive connections, each request at its scheduled time whether or not earlier ones
//! have answered (so a slow server cannot slow the load down and hide its latency:
//! latency counts from the scheduled send time). Prints the latency distribution, errors,
//! and the server's resident memory over the run when `--pid` is given.
//!
//! `cargo run --release -p api --example loadgen -- --addr 127.0.0.1:8000 --path /predict/job --body job.json --rate 500 --duration 30`
//!
//! `--bodies FILE` (one JSON body per line) sends request `i` with line `i` modulo their
//! number instead of one fixed body, so every request can carry a text the server has not
//! seen.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Args {
    addr: String,
    path: String,
    body: Vec<u8>,
    bodies: Option<Vec<Vec<u8>>>,
    rate: f64,
    duration: f64,
    connections: usize,
    pid: Option<u32>,
    count: Option<usize>,
}

fn parse() -> Args {
    let mut a = Args {
        addr: "127.0.0.1:8000".into(),
        path: "/predict/job".into(),
        body: br#"{"job_title":"software developer","duties_description":"writing code"}"#.to_vec(),
        bodies: None,
        rate: 500.0,
        duration: 30.0,
        connections: 16,
        pid: None,
        count: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < args.len() {
        let v = args[i + 1].clone();
        match args[i].as_str() {
            "--addr" => a.addr = v,
            "--path" => a.path = v,
            "--body" => a.body = std::fs::read(&v).unwrap_or_else(|e| panic!("--body {v}: {e}")),
            "--bodies" => {
                let text =
                    std::fs::read_to_string(&v).unwrap_or_else(|e| panic!("--bodies {v}: {e}"));
                a.bodies = Some(
                    text.lines()
                        .filter(|l| !l.trim().is_empty())
                        .map(|l| l.as_bytes().to_vec())
                        .collect(),
                );
            }
            "--rate" => a.rate = v.parse().expect("--rate is a number"),
            "--duration" => a.duration = v.parse().expect("--duration is a number"),
            "--connections" => a.connections = v.parse().expect("--connections is a number"),
            "--pid" => a.pid = Some(v.parse().expect("--pid is a number")),
            "--count" => a.count = Some(v.parse().expect("--count is a number")),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Sends one request on a keep-alive connection; returns the status.
fn send(
    conn: &mut Option<BufReader<TcpStream>>,
    addr: &str,
    head: &[u8],
    body: &[u8],
) -> std::io::Result<u16> {
    if conn.is_none() {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        *conn = Some(BufReader::new(s));
    }
    let r = conn.as_mut().expect("connected");
    let mut msg = head.to_vec();
    msg.extend_from_slice(body);
    r.get_mut().write_all(&msg)?;
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut len = 0usize;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            break;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut sink = vec![0u8; len];
    r.read_exact(&mut sink)?;
    Ok(status)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn main() {
    let a = parse();
    let total = a.count.unwrap_or((a.rate * a.duration) as usize);
    let bodies: Arc<Vec<Vec<u8>>> =
        Arc::new(a.bodies.clone().unwrap_or_else(|| vec![a.body.clone()]));
    let head_of = |path: &str, addr: &str, len: usize| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
        )
        .into_bytes()
    };
    let results = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let start = Instant::now() + Duration::from_millis(200);
    let interval = Duration::from_secs_f64(1.0 / a.rate);
    let rss: Arc<Mutex<Vec<(f64, u64)>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = a.pid.map(|pid| {
        let (rss, done) = (rss.clone(), done.clone());
        std::thread::spawn(move || {
            let t = Instant::now();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(kb) = rss_kb(pid) {
                    rss.lock().unwrap().push((t.elapsed().as_secs_f64(), kb));
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    });
    let workers: Vec<_> = (0..a.connections)
        .map(|w| {
            let (addr, path, bodies, results) = (
                a.addr.clone(),
                a.path.clone(),
                bodies.clone(),
                results.clone(),
            );
            let conns = a.connections;
            std::thread::spawn(move || {
                let mut conn = None;
                let mut mine = Vec::new();
                let mut i = w;
                while i < total {
                    let due = start + interval * i as u32;
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let body = &bodies[i % bodies.len()];
                    let head = head_of(&path, &addr, body.len());
                    let status = send(&mut conn, &addr, &head, body).unwrap_or_else(|_| {
                        conn = None;
                        0
                    });
                    mine.push((due.elapsed().as_secs_f64(), status));
                    i += conns;
                }
                results.lock().unwrap().extend(mine);
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let wall = start.elapsed().as_secs_f64();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(s) = sampler {
        s.join().unwrap();
    }
    let r = results.lock().unwrap();
    let errors = r.iter().filter(|(_, s)| *s != 200).count();
    let mut lat: Vec<f64> = r.iter().map(|(l, _)| l * 1000.0).collect();
    lat.sort_by(f64::total_cmp);
    println!(
        "{} requests to {} in {wall:.1} s ({:.0}/s offered, {:.0}/s done), {errors} errors (non-200 or connection)",
        r.len(),
        a.path,
        a.rate,
        r.len() as f64 / wall
    );
    println!(
        "latency ms from scheduled send: p50 {:.2}, p90 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2}",
        pct(&lat, 0.5),
        pct(&lat, 0.9),
        pct(&lat, 0.99),
        pct(&lat, 0.999),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    let rss = rss.lock().unwrap();
    if let (Some(first), Some(last)) = (rss.first(), rss.last()) {
        let max = rss.iter().map(|(_, k)| *k).max().unwrap_or(0);
        let mid = rss[rss.len() / 2].1;
        println!(
            "server RSS MB: start {:.1}, middle {:.1}, end {:.1}, max {:.1} ({} samples)",
            first.1 as f64 / 1024.0,
            mid as f64 / 1024.0,
            last.1 as f64 / 1024.0,
            max as f64 / 1024.0,
            rss.len()
        );
    }
}
