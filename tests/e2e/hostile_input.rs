//! Random bytes, truncated frames, absurd lengths and hostile array counts on the
//! Kafka port: connections close, the broker never panics nor allocates what a frame
//! claims, and keeps serving real clients.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rdkafka::producer::FutureRecord;
use sluice_e2e::clients::producer;
use sluice_e2e::Sluice;

fn send(addr: &str, bytes: &[u8]) {
    if let Ok(mut s) = TcpStream::connect(addr) {
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        let _ = s.write_all(bytes);
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_never_takes_the_broker_down() -> anyhow::Result<()> {
    let mut sluice = Sluice::start(&[])?;
    let addr = sluice.bootstrap();

    // A 2 GiB length prefix, then nothing.
    send(&addr, &[0x7f, 0xff, 0xff, 0xff]);
    // Negative length.
    send(&addr, &[0xff, 0xff, 0xff, 0xf0, 1, 2, 3]);
    // Truncated frame: claims 100 bytes, sends 10, hangs up.
    send(&addr, &[0, 0, 0, 100, 0, 3, 0, 1, 0, 0, 0, 1, 0, 0]);
    // Metadata v0 whose topic array claims i32::MAX entries.
    send(
        &addr,
        &[
            0, 0, 0, 14, 0, 3, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff,
        ],
    );
    // Produce v9 (flexible) with a compact array claiming 2^32-2 topics.
    send(
        &addr,
        &[
            0, 0, 0, 20, 0, 0, 0, 9, 0, 0, 0, 1, 0xff, 0xff, 0, 0, 0xff, 0xff, 0, 0, 0x75, 0x30,
            0xff, 0xff,
        ],
    );
    // Random frames with valid-looking headers, and pure noise.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for i in 0..2_000i32 {
        let body_len = rng.random_range(0..300);
        let mut frame = Vec::with_capacity(body_len + 12);
        frame.extend_from_slice(&((body_len + 8) as i32).to_be_bytes());
        frame.extend_from_slice(&rng.random_range(0i16..70).to_be_bytes());
        frame.extend_from_slice(&rng.random_range(0i16..14).to_be_bytes());
        frame.extend_from_slice(&i.to_be_bytes());
        frame.extend((0..body_len).map(|_| rng.random::<u8>()));
        send(&addr, &frame);
        if i % 10 == 0 {
            let noise: Vec<u8> = (0..rng.random_range(1..200))
                .map(|_| rng.random())
                .collect();
            send(&addr, &noise);
        }
    }
    assert!(sluice.is_running(), "broker died; log:\n{}", sluice.log());
    assert!(!sluice.log().contains("panicked"), "a panic was logged");
    let peak = sluice.peak_rss_kib().unwrap_or(0);
    assert!(
        peak > 0 && peak < 512 * 1024,
        "peak RSS {peak} KiB: a claimed size was allocated"
    );

    // Still serving real clients.
    let p = producer(&addr, &[])?;
    let d = p
        .send(
            FutureRecord::<(), [u8]>::to("after-garbage").payload(b"ok"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    assert_eq!(d.offset, 0);
    Ok(())
}
