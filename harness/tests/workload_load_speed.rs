//! A by-hand measurement, not a test of speed: how fast `read` loads a
//! 256 MiB workload compared with `cp` of the same file (page cache warm).
//!
//! `cargo test -p kiln --release --test workload_load_speed -- --ignored --nocapture`

mod workload_util;

use std::process::Command;
use std::time::Instant;

use kiln::workload::{Workload, read, write};
use shared_state::{Call, Tensor};

#[test]
#[ignore = "measurement by hand: writes and reads 256 MiB"]
fn read_256_mib_versus_cp() {
    let dir = workload_util::scratch_dir("load_speed");
    let path = dir.join("big.kwl");
    let n = 16 << 20; // 16 Mi f32 = 64 MiB per tensor, four tensors
    let mut w = Workload::new("big");
    w.load(
        "a",
        Tensor::from_f32(&[n], (0..n).map(|i| i as f32).collect()),
    );
    w.load("b", Tensor::from_f32(&[n], vec![1.5; n]));
    w.call(
        Call::new("saxpy")
            .arg(Tensor::from_f32(&[n], vec![2.5; n]))
            .resident("b"),
        Some(Tensor::from_f32(&[n], vec![0.5; n])),
    );
    let t = Instant::now();
    write(&w, &path).unwrap();
    let write_s = t.elapsed().as_secs_f64();
    drop(w);
    let size = std::fs::metadata(&path).unwrap().len();
    let mib = size as f64 / (1 << 20) as f64;

    let mut best_read = f64::MAX;
    let mut best_cp = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let w = read(&path).unwrap();
        best_read = best_read.min(t.elapsed().as_secs_f64());
        assert_eq!(w.input_bytes(), 3 * 4 * n as u64);
        drop(w);
        let copy = dir.join("copy.kwl");
        let t = Instant::now();
        assert!(
            Command::new("cp")
                .arg(&path)
                .arg(&copy)
                .status()
                .unwrap()
                .success()
        );
        best_cp = best_cp.min(t.elapsed().as_secs_f64());
        std::fs::remove_file(&copy).unwrap();
    }
    println!(
        "{mib:.0} MiB: write {:.0} ms; read {:.0} ms ({:.2} GiB/s); cp {:.0} ms; read/cp = {:.2}",
        write_s * 1e3,
        best_read * 1e3,
        mib / 1024.0 / best_read,
        best_cp * 1e3,
        best_read / best_cp
    );
    // for comparison: a plain Vec (no huge-page advice) filled with one
    // read_exact, and the checksum alone
    use std::io::Read;
    let mut best_io = f64::MAX;
    let mut best_crc = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let mut f = std::fs::File::open(&path).unwrap();
        let mut buf = vec![0u8; size as usize];
        f.read_exact(&mut buf).unwrap();
        best_io = best_io.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        std::hint::black_box(crc32fast::hash(&buf));
        best_crc = best_crc.min(t.elapsed().as_secs_f64());
    }
    println!(
        "  plain vec + read_exact of the whole file {:.0} ms; crc32 of it {:.0} ms",
        best_io * 1e3,
        best_crc * 1e3
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
