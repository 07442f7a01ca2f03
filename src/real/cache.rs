//! A farm's memcached: `flush_all` at the farm switch (every endpoint must
//! answer `OK`, else the switch halts), and a reachability check.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

async fn exchange(host: &str, port: u16, command: &str, timeout: Duration) -> Result<String, String> {
    let talk = async {
        let s = tokio::net::TcpStream::connect((host, port)).await?;
        let mut s = BufReader::new(s);
        s.get_mut().write_all(command.as_bytes()).await?;
        let mut line = String::new();
        s.read_line(&mut line).await?;
        std::io::Result::Ok(line)
    };
    match tokio::time::timeout(timeout, talk).await {
        Err(_) => Err(format!("memcached {host}:{port}: no answer within {}", humantime::format_duration(timeout))),
        Ok(Err(e)) => Err(format!("memcached {host}:{port}: {e}")),
        Ok(Ok(line)) => Ok(line.trim_end().to_string()),
    }
}

/// `flush_all` on every endpoint; the first that does not answer `OK` is the error.
pub async fn flush_all(endpoints: &[(String, u16)], timeout: Duration) -> Result<(), String> {
    for (h, p) in endpoints {
        let answer = exchange(h, *p, "flush_all\r\n", timeout).await?;
        if answer != "OK" {
            return Err(format!("memcached {h}:{p}: flush_all answered {answer:?}"));
        }
    }
    Ok(())
}

/// Every endpoint answers `version`.
pub async fn reachable(endpoints: &[(String, u16)], timeout: Duration) -> bool {
    for (h, p) in endpoints {
        match exchange(h, *p, "version\r\n", timeout).await {
            Ok(a) if a.starts_with("VERSION ") => {}
            _ => return false,
        }
    }
    true
}
