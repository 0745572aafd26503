//! Every HTTP status path of the Event Hubs REST ingest and the generic JSON ingest.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use twinhub_core::sas::{SasKey, sign};
use twinhub_emulator::{Emulator, EmulatorConfig, Protocol, RegionConfig, Tier};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(resource: &str, key: &str, key_name: &str, expiry: u64) -> String {
    let mut buf = [0u8; 512];
    sign(
        resource,
        &SasKey::Text(key),
        Some(key_name),
        expiry,
        &mut buf,
    )
    .unwrap()
    .to_string()
}

async fn one_region() -> Emulator {
    let config = EmulatorConfig::empty().region(
        RegionConfig::new("primary")
            .key("k-primary")
            .event_hubs(["telemetry", "alerts"]),
    );
    Emulator::start(config).await.unwrap()
}

#[tokio::test]
async fn batch_is_recorded_with_ids_in_documented_order() {
    let emu = one_region().await;
    let r = &emu["primary"];
    let body = r#"[
        {"Body":"one","BrokerProperties":{"MessageId":"dev:1:0"},"UserProperties":{"message-id":"dev:1:0"}},
        {"Body":"dHdv","IsBodyBase64":true,"UserProperties":{"message-id":"dev:1:1","Alert":"x"}},
        {"Body":"three"}
    ]"#;
    assert_eq!(send_batch(&client(), r, body).await.unwrap(), 201);
    let records = r.wait_for_records(3, T).await.unwrap();
    assert_eq!(records[0].message_id.as_deref(), Some("dev:1:0"));
    assert_eq!(records[1].body, b"two");
    assert_eq!(records[1].properties["Alert"], "x");
    assert_eq!(records[2].message_id, None);
    assert!(
        records
            .iter()
            .all(|x| x.protocol == Protocol::EventHubs && x.target == "telemetry")
    );
    assert!(records[0].peer.unwrap().ip().is_loopback());
    let st = r.stats();
    assert_eq!(
        (st.total.events, st.total.unique_ids, st.total.without_id),
        (3, 2, 1)
    );
    // The same batch again: duplicates are counted, not hidden.
    assert_eq!(send_batch(&client(), r, body).await.unwrap(), 201);
    assert_eq!(r.stats().total.duplicates, 2);
    assert_eq!(r.id_count("dev:1:0"), 2);
}

#[tokio::test]
async fn single_event_takes_id_from_broker_properties_header() {
    let emu = one_region().await;
    let r = &emu["primary"];
    let resp = client()
        .post(messages_url(r))
        .header("Authorization", r.sas_token(Duration::from_secs(60)))
        .header("Content-Type", SINGLE)
        .header("BrokerProperties", r#"{"MessageId":"single-1"}"#)
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.text().await.unwrap(), "");
    let resp = client()
        .post(messages_url(r))
        .header("Authorization", r.sas_token(Duration::from_secs(60)))
        .header("Content-Type", SINGLE)
        .header("message-id", "single-2")
        .body("bye")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(r.ids(), ["single-1", "single-2"]);
    assert_eq!(r.records()[0].body_str(), Some("hello"));
}

#[tokio::test]
async fn sas_tokens_from_the_engine_signer() {
    let emu = one_region().await;
    let r = &emu["primary"];
    let host = r.http_addr().to_string();
    let hub = r.event_hub();
    let later = now() + 600;
    let post = |auth: Option<String>| {
        let mut req = client()
            .post(messages_url(r))
            .header("Content-Type", BATCH)
            .body(r#"[{"Body":"x"}]"#);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    // Accepted: any scheme or none, namespace or entity.
    for sr in [
        format!("sb://{host}/{hub}"),
        format!("sb://{host}/"),
        format!("http://{host}/{hub}"),
        format!("https://{host}"),
        format!("{host}/{hub}"),
        host.clone(),
        format!("sb://localhost:{}/{hub}", r.http_addr().port()),
    ] {
        let (s, b) = post(Some(token(&sr, "k-primary", "send", later))).await;
        assert_eq!(s, 201, "sr {sr}: {b}");
    }
    // Rejected, each with a reason.
    let cases = [
        (None, "missing Authorization"),
        (Some("Bearer abc".to_string()), "malformed"),
        (
            Some("SharedAccessSignature sr=x&sig=y".to_string()),
            "malformed",
        ),
        (
            Some(token(
                &format!("sb://{host}/{hub}"),
                "other-key",
                "send",
                later,
            )),
            "signature",
        ),
        (
            Some(token(
                &format!("sb://{host}/{hub}"),
                "k-primary",
                "send",
                now() - 1,
            )),
            "expired",
        ),
        (
            Some(token(
                &format!("sb://{host}/{hub}"),
                "k-primary",
                "listen",
                later,
            )),
            "skn",
        ),
        (
            Some(token(
                &format!("sb://elsewhere:1/{hub}"),
                "k-primary",
                "send",
                later,
            )),
            "host",
        ),
        (
            Some(token(
                &format!("sb://{host}/alerts"),
                "k-primary",
                "send",
                later,
            )),
            "does not cover",
        ),
    ];
    for (auth, why) in cases {
        let (s, b) = post(auth.clone()).await;
        assert_eq!(s, 401, "{auth:?}");
        assert!(b.contains(why), "{auth:?}: {b} should say {why}");
        assert!(b.starts_with("<Error><Code>401</Code>"), "{b}");
    }
    assert_eq!(r.len(), 7);
}

#[tokio::test]
async fn status_paths() {
    let emu = one_region().await;
    let r = &emu["primary"];
    let tok = r.sas_token(Duration::from_secs(600));
    let post = |url: String, ct: Option<&'static str>, body: &'static str| {
        let mut req = client()
            .post(url)
            .header("Authorization", tok.clone())
            .body(body);
        if let Some(ct) = ct {
            req = req.header("Content-Type", ct);
        }
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let base = r.http_url();
    // Unknown hub; the token names the namespace so auth passes.
    let ns_token = token(
        &format!("sb://{}/", r.http_addr()),
        r.key(),
        "send",
        now() + 600,
    );
    let resp = client()
        .post(format!("{base}/nope/messages"))
        .header("Authorization", ns_token.clone())
        .header("Content-Type", BATCH)
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.text().await.unwrap().contains("nope"));
    let (s, _) = post(format!("{base}/telemetry/elsewhere"), Some(BATCH), "[]").await;
    assert_eq!(s, 404);
    // Wrong or missing content type.
    let (s, b) = post(messages_url(r), Some("text/plain"), "x").await;
    assert_eq!(s, 415, "{b}");
    let (s, _) = post(messages_url(r), None, "x").await;
    assert_eq!(s, 415);
    // Malformed batches name the reason.
    for (body, why) in [
        ("{", "not valid JSON"),
        ("[]", "empty"),
        (r#"[{"Body":"a"},{"x":1}]"#, "event 1: has no Body"),
        (r#"{"Body":"a"}"#, "array"),
    ] {
        let (s, b) = post(messages_url(r), Some(BATCH), body).await;
        assert_eq!(s, 400, "{body}");
        assert!(b.contains(why), "{b} should say {why}");
    }
    // Partition and publisher paths are the same ingest.
    let (s, b) = post(
        format!("{base}/telemetry/partitions/0/messages"),
        Some(BATCH),
        r#"[{"Body":"p"}]"#,
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let (s, _) = post(
        format!("{base}/telemetry/publishers/dev1/messages?api-version=2014-01"),
        Some(BATCH),
        r#"[{"Body":"p"}]"#,
    )
    .await;
    assert_eq!(s, 201);
    assert_eq!(r.len(), 2, "nothing refused was recorded");
}

#[tokio::test]
async fn size_limits_per_tier() {
    let config = EmulatorConfig::empty()
        .region(RegionConfig::new("basic").tier(Tier::Basic))
        .region(RegionConfig::new("standard"));
    let emu = Emulator::start(config).await.unwrap();
    let c = client();
    // 300 KB fits Standard, not Basic.
    let body = format!(r#"[{{"Body":"{}"}}]"#, "a".repeat(300 * 1024));
    assert_eq!(send_batch(&c, &emu["standard"], &body).await.unwrap(), 201);
    let resp = c
        .post(messages_url(&emu["basic"]))
        .header(
            "Authorization",
            emu["basic"].sas_token(Duration::from_secs(60)),
        )
        .header("Content-Type", BATCH)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert!(resp.text().await.unwrap().contains("262144"));
    // Just at the limit is fine.
    let exact = format!(r#"[{{"Body":"{}"}}]"#, "b".repeat(256 * 1024 - 13));
    assert_eq!(exact.len(), 256 * 1024);
    assert_eq!(send_batch(&c, &emu["basic"], &exact).await.unwrap(), 201);
    let over_standard = format!(r#"[{{"Body":"{}"}}]"#, "a".repeat(1024 * 1024));
    assert_eq!(
        send_batch(&c, &emu["standard"], &over_standard)
            .await
            .unwrap(),
        413
    );
    assert_eq!(emu["basic"].len(), 1);
    assert_eq!(emu["standard"].len(), 1);

    // A chunked body (no Content-Length) is cut off at the limit too.
    let r = &emu["basic"];
    let mut s = tokio::net::TcpStream::connect(r.http_addr()).await.unwrap();
    let head = format!(
        "POST /telemetry/messages HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: {BATCH}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        r.http_addr(),
        r.sas_token(Duration::from_secs(60))
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let mut resp = Vec::new();
    for _ in 0..8 {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(&chunk);
        frame.extend_from_slice(b"\r\n");
        s.write_all(&frame).await.unwrap();
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let _ = tokio::time::timeout(T, s.read_to_end(&mut resp)).await;
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
}

#[tokio::test]
async fn generic_ingest_and_idempotency() {
    let emu = one_region().await;
    let r = &emu["primary"];
    let url = format!("{}/ingest/telemetry", r.http_url());
    let body = r#"[{"id":"g:1","body":{"t":21.5}},{"id":"g:2","body":"aGk=","body_encoding":"base64","properties":{"k":"v"}}]"#;
    let send = |key: Option<&'static str>, body: &'static str, ct: &'static str| {
        let mut req = client()
            .post(url.clone())
            .header("Content-Type", ct)
            .body(body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        async move {
            let resp = req.send().await.unwrap();
            let replayed = resp.headers().get("idempotent-replayed").is_some();
            (resp.status().as_u16(), resp.text().await.unwrap(), replayed)
        }
    };
    let first = send(Some("key-1"), body, "application/json").await;
    assert_eq!(
        (first.0, first.1.as_str(), first.2),
        (201, r#"{"accepted":2}"#, false)
    );
    let again = send(Some("key-1"), body, "application/json").await;
    assert_eq!(
        (again.0, again.1.as_str(), again.2),
        (201, r#"{"accepted":2}"#, true)
    );
    assert_eq!(r.len(), 2, "a replay is not recorded twice");
    let other = send(
        Some("key-1"),
        r#"[{"id":"g:3","body":1}]"#,
        "application/json",
    )
    .await;
    assert_eq!(other.0, 422);
    // Without a key, a resend is recorded (and counted as duplicates).
    assert_eq!(send(None, body, "application/json").await.0, 201);
    assert_eq!(r.stats().by_protocol["http"].duplicates, 2);
    let records = r.records();
    assert_eq!(records[0].body, br#"{"t":21.5}"#);
    assert_eq!(records[1].body, b"hi");
    assert_eq!(records[1].properties["k"], "v");
    assert!(records.iter().all(|x| x.protocol == Protocol::Http));
    // Bad input.
    let (s, b, _) = send(Some("key-2"), r#"[{"body":"x"}]"#, "application/json").await;
    assert_eq!(s, 400);
    assert!(b.contains("has no id"), "{b}");
    let (s, _, replayed) = send(Some("key-2"), r#"[{"body":"x"}]"#, "application/json").await;
    assert_eq!((s, replayed), (400, true), "errors replay too");
    assert_eq!(send(None, body, "text/plain").await.0, 415);
    assert_eq!(r.len(), 4);
}
