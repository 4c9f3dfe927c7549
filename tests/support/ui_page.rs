//! The live page of a `kiln dev --ui` session: where it is, read from the
//! session's `ui` event (`http://127.0.0.1:PORT/?token=TOKEN`).

use crate::dev_session::{DevSession, events};

/// The page's address and token.
pub struct UiAddress {
    /// The whole URL, token included.
    pub url: String,
    pub port: u16,
    pub token: String,
}

impl UiAddress {
    /// The `Host` the page accepts.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The URL without its token.
    pub fn bare(&self) -> String {
        format!("http://{}/", self.host())
    }
}

/// Where the page of `session` is; fails the session (with its log) when
/// it logged no `ui` event or its URL is not `http://127.0.0.1:PORT/?token=`.
pub fn ui_address(session: &DevSession) -> UiAddress {
    let Some(url) = session
        .events
        .iter()
        .find_map(|e| e.get::<events::Ui>())
        .map(|ui| ui.url.clone())
    else {
        session.fail("no `ui` event with the page's URL")
    };
    parse(&url).unwrap_or_else(|| session.fail(&format!("the page's URL: {url}")))
}

/// `http://127.0.0.1:PORT/?token=TOKEN` taken apart.
pub fn parse(url: &str) -> Option<UiAddress> {
    let rest = url.strip_prefix("http://127.0.0.1:")?;
    let (port, token) = rest.split_once("/?token=")?;
    Some(UiAddress {
        url: url.to_string(),
        port: port.parse().ok()?,
        token: token.to_string(),
    })
}
