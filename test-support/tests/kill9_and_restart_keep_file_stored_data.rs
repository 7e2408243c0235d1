//! The harness can crash (kill -9) and restart a server on the same port and store, and
//! file-stored stream data survives.

use std::time::Duration;

use async_nats::jetstream::{self, stream::Config};
use cloudlysis_test_support::{NatsServer, eventually};

#[tokio::test]
async fn kill9_and_restart_keep_file_stored_stream_data() {
    let mut server = NatsServer::start().await.unwrap();
    let port = server.port();
    let js = server.jetstream().await;
    js.create_stream(Config {
        name: "KEEP".into(),
        subjects: vec!["keep.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    for i in 0..10u32 {
        js.publish(format!("keep.{i}"), i.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    server.kill9().await.unwrap();
    assert!(!server.is_running());
    server.restart().await.unwrap();
    assert!(server.is_running());
    assert_eq!(server.port(), port, "same port after restart");

    let js = server.jetstream().await;
    let mut stream = js.get_stream("KEEP").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 10);
}

#[tokio::test]
async fn a_client_reconnects_after_a_graceful_restart() {
    let mut server = NatsServer::start().await.unwrap();
    let client = server.client().await;
    server.stop().await.unwrap();
    server.restart().await.unwrap();
    let reconnected = eventually(Duration::from_secs(15), || {
        let c = client.clone();
        async move { c.connection_state() == async_nats::connection::State::Connected }
    })
    .await;
    assert!(reconnected, "client did not reconnect");
    let js = jetstream::new(client);
    js.query_account().await.unwrap();
}

#[tokio::test]
async fn parallel_servers_do_not_collide() {
    let (a, b) = tokio::join!(NatsServer::start(), NatsServer::start());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.port(), b.port());
    assert_ne!(a.store_dir(), b.store_dir());
}
