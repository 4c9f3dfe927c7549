//! What the machine's measurements count, checked without timing anything:
//! the triad counts the bytes it moves (STREAM's 24 per element) and
//! computes what it claims, and the cache flush covers twice the LLC.
//! These cannot depend on the machine's load, and each fails if the code
//! overstates what it measures (a triad counting 5x its bytes, a flush
//! smaller than the cache).
//!
//! The timing relations (saxpy against the triad, cold against warm) are
//! measured in the bench, where a run says what load it saw:
//! `cargo bench -p kiln-bench -- relations`.

use kiln::machine::flush::FLUSH_FACTOR;
use kiln::machine::triad::{TRIAD_BYTES_PER_ELEMENT, Triad};
use kiln::machine::{CacheFlush, llc, threads};

#[test]
fn the_triad_counts_the_bytes_it_moves_and_computes_what_it_claims() {
    let pool = threads::pool(2).unwrap();
    // A size that is not a multiple of the thread count.
    let array_bytes = 8 * 100_003;
    let mut triad = Triad::new(&pool, array_bytes);
    assert_eq!(triad.array_bytes(), array_bytes);
    // a = b + s*c reads b and c and writes a: three arrays of f64 per pass.
    const { assert!(TRIAD_BYTES_PER_ELEMENT == 3 * 8) };
    assert_eq!(triad.bytes_per_pass(), 3 * array_bytes);
    // Every element is computed (the pass checks its last one: 1 + 3*2 = 7).
    let secs = triad.pass(&pool);
    assert!(secs.is_finite() && secs >= 0.0);
}

#[test]
fn the_cache_flush_covers_twice_the_last_level_cache() {
    let llc = llc::detect();
    assert!(llc.used_bytes > 0, "{llc}");
    const { assert!(FLUSH_FACTOR >= 2) };
    let flush = CacheFlush::new(llc.used_bytes, 0).unwrap();
    assert!(
        flush.bytes() >= FLUSH_FACTOR * llc.used_bytes,
        "a flush of {} B for an LLC of {} B",
        flush.bytes(),
        llc.used_bytes
    );
}
