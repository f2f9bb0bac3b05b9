//! `http.headertimeout`: a client that sends half a request head, or nothing at all, is
//! disconnected (slowloris); complete requests are unaffected.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::Server;

/// Reads until the server closes the connection (at most 20 s); returns what it sent.
fn read_until_closed(mut stream: TcpStream) -> String {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("connection still open after {:?}: {e}", started.elapsed()),
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}

#[test]
fn half_a_request_head_is_disconnected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "  headertimeout: 1s\n");
    let connect = || TcpStream::connect(("127.0.0.1", server.port)).expect("connect");

    // Half a head: the request line and one header, never the blank line.
    let mut slow = connect();
    slow.write_all(b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .expect("half head");
    // Nothing at all.
    let silent = connect();
    // A complete request on another connection is served meanwhile.
    let mut whole = connect();
    whole
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .expect("whole request");
    let reply = read_until_closed(whole);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    // Both are closed well before read_until_closed's own 20 s limit.
    for (what, stream) in [("half a head", slow), ("a silent client", silent)] {
        let reply = read_until_closed(stream);
        assert!(
            !reply.contains(" 200 "),
            "{what} must not be answered: {reply}"
        );
    }
}
