//! The kind of client a User-Agent names, for transactions and their search: `bot`
//! (crawlers, monitors, previews), `library` (HTTP clients of programs and shells),
//! `tablet`, `mobile`, `desktop`, else `unknown`. Checked in that order on the
//! lower-cased agent, with the markers the common parsers (ua-parser, Matomo's device
//! detector) key on; an agent that names no platform is `unknown`.

/// Markers of automated agents.
const BOTS: [&str; 14] = [
    "bot",
    "crawl",
    "spider",
    "slurp",
    "facebookexternalhit",
    "bingpreview",
    "mediapartners",
    "headlesschrome",
    "lighthouse",
    "pingdom",
    "uptime",
    "monitor",
    "archiver",
    "preview",
];

/// Markers of HTTP libraries and command-line clients (checked at the start of the agent
/// or as a product token).
const LIBRARIES: [&str; 16] = [
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "python-httpx",
    "aiohttp",
    "go-http-client",
    "java/",
    "okhttp",
    "apache-httpclient",
    "axios/",
    "node-fetch",
    "undici",
    "libwww-perl",
    "httpie",
    "postmanruntime",
];

const TABLETS: [&str; 5] = ["ipad", "tablet", "kindle", "silk/", "playbook"];

const MOBILES: [&str; 7] = [
    "mobi",
    "iphone",
    "ipod",
    "windows phone",
    "blackberry",
    "opera mini",
    "android",
];

const DESKTOPS: [&str; 6] = [
    "windows nt",
    "macintosh",
    "mac os x",
    "x11",
    "linux",
    "cros",
];

/// The device class of `user_agent`.
pub fn classify(user_agent: Option<&str>) -> &'static str {
    let Some(ua) = user_agent.filter(|u| !u.trim().is_empty()) else {
        return "unknown";
    };
    // Bounded: an agent of kilobytes is read no further than its first 512 bytes.
    let end = (0..=ua.len().min(512))
        .rev()
        .find(|i| ua.is_char_boundary(*i))
        .unwrap_or(0);
    let ua = ua[..end].to_ascii_lowercase();
    let has = |list: &[&str]| list.iter().any(|m| ua.contains(m));
    if has(&BOTS) {
        "bot"
    } else if has(&LIBRARIES) {
        "library"
    } else if has(&TABLETS) || (ua.contains("android") && !ua.contains("mobile")) {
        "tablet"
    } else if has(&MOBILES) {
        "mobile"
    } else if has(&DESKTOPS) {
        "desktop"
    } else {
        "unknown"
    }
}

#[cfg(test)]
mod tests {
    use super::classify;

    #[test]
    fn common_agents_fall_in_their_class() {
        let cases = [
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
                "desktop",
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15",
                "desktop",
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
                "desktop",
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
                "mobile",
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36",
                "mobile",
            ),
            (
                "Mozilla/5.0 (iPad; CPU OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
                "tablet",
            ),
            (
                "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
                "tablet",
            ),
            (
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                "bot",
            ),
            ("facebookexternalhit/1.1", "bot"),
            ("curl/8.5.0", "library"),
            ("python-requests/2.31.0", "library"),
            ("Go-http-client/1.1", "library"),
            ("okhttp/4.12.0", "library"),
            ("SomethingElse/1.0", "unknown"),
            ("", "unknown"),
        ];
        for (ua, want) in cases {
            assert_eq!(classify(Some(ua)), want, "{ua}");
        }
        assert_eq!(classify(None), "unknown");
        assert_eq!(classify(Some(&"é".repeat(600))), "unknown");
    }
}
