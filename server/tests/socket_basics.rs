//! The real server on 127.0.0.1:0, spoken to by a real WebSocket client.

use app::protocol::{ErrorCode, ServerMsg, PROTOCOL_VERSION};
use futures::{SinkExt, StreamExt};
use server::config::Config;
use tokio_tungstenite::tungstenite::Message;

async fn start_server() -> (server::RunningServer, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.chat.data_dir = data.path().to_path_buf();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    (server::start(config, listener).await.unwrap(), data)
}

async fn next_server_msg<S>(socket: &mut S) -> ServerMsg
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(5), socket.next())
            .await
            .expect("server answered in time")
            .expect("socket still open")
            .expect("frame readable");
        if let Message::Text(text) = frame {
            return serde_json::from_str(&text).expect("server frames are protocol messages");
        }
    }
}

#[tokio::test]
async fn greets_then_answers_pings_and_survives_bad_frames() {
    let (server, _data) = start_server().await;
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr())).await.unwrap();

    match next_server_msg(&mut socket).await {
        ServerMsg::Hello { protocol, .. } => assert_eq!(protocol, PROTOCOL_VERSION),
        other => panic!("expected hello, got {other:?}"),
    }

    socket.send(Message::text(r#"{"type":"ping","id":41}"#)).await.unwrap();
    assert_eq!(next_server_msg(&mut socket).await, ServerMsg::Pong { id: 41 });

    socket.send(Message::text("{oops")).await.unwrap();
    match next_server_msg(&mut socket).await {
        ServerMsg::Error { id: None, code: ErrorCode::BadRequest, message } => assert!(message.contains("not valid JSON")),
        other => panic!("expected a bad-request error, got {other:?}"),
    }

    // The connection is still usable after the bad frame.
    socket.send(Message::text(r#"{"type":"ping","id":42}"#)).await.unwrap();
    assert_eq!(next_server_msg(&mut socket).await, ServerMsg::Pong { id: 42 });

    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_tells_open_sockets_the_server_is_going_away() {
    let (server, _data) = start_server().await;
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr())).await.unwrap();
    let _hello = next_server_msg(&mut socket).await;

    let stopping = tokio::spawn(server.shutdown());
    let close = loop {
        match socket.next().await {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(u16::from(close.expect("close carries a code").code), 1001);
    drop(socket);
    stopping.await.unwrap().unwrap();
}

#[tokio::test]
async fn renders_the_home_page_on_the_server() {
    let (server, _data) = start_server().await;
    let html = reqwest::get(format!("http://{}/", server.addr())).await.unwrap().text().await.unwrap();
    assert!(html.contains("<title>Parley</title>"), "{html}");
    assert!(html.contains(r#"data-testid="socket-state""#));
    server.shutdown().await.unwrap();
}
