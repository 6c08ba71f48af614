//! `type: jwt` through real sockets against a real key-set server: RS256, ES256 and EdDSA
//! tokens admitted with their claims forwarded; every rejection path answered 401 with
//! a Bearer challenge (expired, wrong audience or issuer, tampered, `alg: none`, HMAC
//! signed with the RSA public key, a token naming its own key, an unknown `kid`); key
//! rotation; one fetch for a burst of requests and no fetch storm for made-up key ids;
//! OpenID discovery over HTTPS with a private CA; a provider that is down (503).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::idp::Idp;
use crate::support::*;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key and its public JWK.
struct Signer {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
    jwk: Value,
    /// The public key as PEM (RSA only: the algorithm-confusion test signs with it).
    public_pem: Option<Vec<u8>>,
}

impl Signer {
    fn es256(kid: &str) -> Self {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = kp.public_key_raw();
        Self {
            kid: kid.into(),
            alg: Algorithm::ES256,
            key: EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
            jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
                        "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}),
            public_pem: None,
        }
    }

    fn ed25519(kid: &str) -> Self {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        Self {
            kid: kid.into(),
            alg: Algorithm::EdDSA,
            key: EncodingKey::from_ed_pem(kp.serialize_pem().as_bytes()).unwrap(),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(kp.public_key_raw())}),
            public_pem: None,
        }
    }

    /// RSA 2048 from `openssl` (ring cannot generate RSA keys).
    fn rs256(kid: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("k.pem");
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .output()
                .expect("openssl runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        let kp = k.to_str().unwrap();
        run(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            kp,
        ]);
        let modulus = String::from_utf8(run(&["rsa", "-in", kp, "-noout", "-modulus"])).unwrap();
        let hex = modulus.trim().trim_start_matches("Modulus=");
        let n: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let public_pem = run(&["pkey", "-in", kp, "-pubout"]);
        Self {
            kid: kid.into(),
            alg: Algorithm::RS256,
            key: EncodingKey::from_rsa_pem(&std::fs::read(&k).unwrap()).unwrap(),
            jwk: json!({"kty": "RSA", "kid": kid, "alg": "RS256", "n": b64(&n), "e": "AQAB"}),
            public_pem: Some(public_pem),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, claims, &self.key).unwrap()
    }

    /// A token with this exact header, signed with this key.
    fn sign_raw(&self, header: &Value, claims: &Value) -> String {
        let msg = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), &self.key, self.alg).unwrap();
        format!("{msg}.{sig}")
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

const ISSUER: &str = "https://idp.example/";

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": ISSUER, "aud": "orders", "exp": now() + 600, "iat": now(), "role": "reader"})
}

async fn get(c: &Client, url: &str, token: Option<&str>, extra: &[(&str, &str)]) -> Reply {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut h: Vec<(&str, &str)> = extra.to_vec();
    if let Some(b) = &bearer {
        h.push(("authorization", b));
    }
    send(c, "GET", url, &h).await
}

/// Asserts a 401 with an RFC 6750 challenge saying the token is invalid.
fn assert_invalid(r: &Reply, what: &str) {
    assert_problem(r, 401);
    let ch = r.header("www-authenticate").unwrap_or_default();
    assert!(
        ch.starts_with("Bearer realm=\"api\"") && ch.contains("error=\"invalid_token\""),
        "{what}: {ch}"
    );
}

fn config(idp: &str, backend: std::net::SocketAddr, extra: &str) -> String {
    format!(
        r#"
consumers:
  - name: mobile-app
    groups: [gold]
    credentials: [{{ type: jwt, subject: mobile-app }}]
  - name: partner
    credentials: [{{ type: api_key, key: partner-key-123 }}]
upstreams:
  u:
    targets: [{{ address: "{backend}" }}]
policies:
  jwt: {{ type: jwt, jwks_url: "{idp}/jwks.json", issuer: "{ISSUER}", audiences: [orders],
          algorithms: [RS256, ES256, EdDSA], leeway: 30s, realm: api,
          forward_claims: {{ x-user-id: sub, x-role: role }}{extra} }}
  key: {{ type: api_key }}
  gold-only: {{ type: acl, allow_groups: [gold] }}
routes:
  - name: jwt
    match: {{ path: {{ type: prefix, value: /jwt }} }}
    policies: [jwt]
    upstream: u
  - name: gold
    match: {{ path: {{ type: prefix, value: /gold }} }}
    policies: [jwt, gold-only]
    upstream: u
  - name: either
    match: {{ path: {{ type: prefix, value: /either }} }}
    policies: [key, jwt]
    upstream: u
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_each_algorithm_admit_and_every_bad_token_is_refused() {
    let (rsa, ec, ed) = (
        Signer::rs256("r1"),
        Signer::es256("e1"),
        Signer::ed25519("d1"),
    );
    let idp = Idp::start(None).await;
    idp.set_keys(json!([rsa.jwk, ec.jwk, ed.jwk]));
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url, _admin) = embedded(&config(&idp.url, be.addr, ""));
    let c = Client::new();

    // A burst of first requests waits for one fetch of the key set.
    let token = ec.sign(&claims("mobile-app"));
    let burst: Vec<_> = (0..20)
        .map(|_| {
            let (c, u, t) = (c.clone(), format!("{url}/jwt"), token.clone());
            tokio::spawn(async move { get(&c, &u, Some(&t), &[]).await.status })
        })
        .collect();
    for b in burst {
        assert_eq!(b.await.unwrap(), 200);
    }
    assert_eq!(idp.jwks_hits(), 1, "one fetch for the burst");

    // Each algorithm; the upstream learns the consumer and the forwarded claims, never
    // the client's own copy of them.
    for s in [&rsa, &ec, &ed] {
        let r = get(
            &c,
            &format!("{url}/gold"),
            Some(&s.sign(&claims("mobile-app"))),
            &[("x-user-id", "forged")],
        )
        .await;
        assert_eq!(r.status, 200, "{:?}: {}", s.alg, r.body_text());
        let h = &r.json()["headers"];
        assert_eq!(h["x-consumer"], "mobile-app");
        assert_eq!(h["x-consumer-groups"], "gold");
        assert_eq!(h["x-user-id"], "mobile-app");
        assert_eq!(h["x-role"], "reader");
    }
    // A subject that is no consumer is admitted as itself, without groups.
    let r = get(
        &c,
        &format!("{url}/jwt"),
        Some(&ec.sign(&claims("someone"))),
        &[],
    )
    .await;
    assert_eq!(r.json()["headers"]["x-consumer"], "someone");
    assert_problem(
        &get(
            &c,
            &format!("{url}/gold"),
            Some(&ec.sign(&claims("someone"))),
            &[],
        )
        .await,
        403,
    );

    // No token: 401 with the bare challenge.
    let r = get(&c, &format!("{url}/jwt"), None, &[]).await;
    assert_problem(&r, 401);
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some("Bearer realm=\"api\"")
    );

    // Every bad token: 401 invalid_token.
    let mut expired = claims("mobile-app");
    expired["exp"] = json!(now() - 120);
    let mut early = claims("mobile-app");
    early["nbf"] = json!(now() + 600);
    let mut aud = claims("mobile-app");
    aud["aud"] = json!("billing");
    let mut iss = claims("mobile-app");
    iss["iss"] = json!("https://evil.example/");
    let mut no_exp = claims("mobile-app");
    no_exp.as_object_mut().unwrap().remove("exp");
    let good = ec.sign(&claims("mobile-app"));
    let (head, rest) = good.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let mut other = claims("admin");
    other["role"] = json!("admin");
    let tampered = format!("{head}.{}.{sig}", b64(other.to_string().as_bytes()));
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims("mobile-app").to_string().as_bytes())
    );
    // HS256 keyed with the RSA public key everyone can fetch.
    let confusion = {
        let pem = rsa.public_pem.clone().unwrap();
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("r1".into());
        jsonwebtoken::encode(&h, &claims("mobile-app"), &EncodingKey::from_secret(&pem)).unwrap()
    };
    let own_key = ec.sign_raw(
        &json!({"alg": "ES256", "kid": "e1", "jwk": ec.jwk}),
        &claims("mobile-app"),
    );
    let jku = ec.sign_raw(
        &json!({"alg": "ES256", "kid": "e1", "jku": "https://evil.example/k"}),
        &claims("mobile-app"),
    );
    // Signed by a key that is not the provider's, under the provider's key id.
    let impostor = Signer::es256("e1").sign(&claims("mobile-app"));
    let cases = [
        ("expired", ec.sign(&expired)),
        ("not yet valid", ec.sign(&early)),
        ("wrong audience", ec.sign(&aud)),
        ("wrong issuer", ec.sign(&iss)),
        ("no exp", ec.sign(&no_exp)),
        ("tampered", tampered),
        ("alg none", none),
        ("HS256 with the RSA public key", confusion),
        ("embedded jwk", own_key),
        ("jku", jku),
        ("impostor", impostor),
        ("garbage", "not.a.token".to_string()),
    ];
    for (what, t) in &cases {
        let r = get(&c, &format!("{url}/jwt"), Some(t), &[]).await;
        assert_invalid(&r, what);
        assert!(
            !r.body_text().contains(t.as_str()),
            "{what}: the token is never echoed"
        );
    }
    assert_eq!(
        get(&c, &format!("{url}/jwt"), Some(&ec.sign(&expired)), &[])
            .await
            .json()["detail"],
        "the token has expired"
    );

    // Made-up key ids (path tricks among them) make at most one more fetch per
    // jwks_min_refresh (10s by default), however many arrive.
    let hits = idp.jwks_hits();
    for kid in ["../../etc/passwd", "x", "y", "%2e%2e", "z"] {
        let mut h = json!({"alg": "ES256", "kid": kid});
        h["typ"] = json!("JWT");
        let t = ec.sign_raw(&h, &claims("mobile-app"));
        assert_invalid(&get(&c, &format!("{url}/jwt"), Some(&t), &[]).await, kid);
    }
    assert!(
        idp.jwks_hits() <= hits + 1,
        "{} fetches",
        idp.jwks_hits() - hits
    );

    // auth_mode any: admitted by the API key, yet the client's x-user-id is removed.
    let r = get(
        &c,
        &format!("{url}/either"),
        None,
        &[("x-api-key", "partner-key-123"), ("x-user-id", "forged")],
    )
    .await;
    assert_eq!(r.status, 200);
    let h = &r.json()["headers"];
    assert_eq!(h["x-consumer"], "partner");
    assert!(h.get("x-user-id").is_none(), "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_are_fetched_for_a_new_kid_and_removed_keys_stop_admitting() {
    let (old, new) = (Signer::es256("k1"), Signer::ed25519("k2"));
    let idp = Idp::start(None).await;
    idp.set_keys(json!([old.jwk]));
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url, _admin) = embedded(&config(&idp.url, be.addr, ", jwks_min_refresh: 300ms"));
    let c = Client::new();
    let old_token = old.sign(&claims("mobile-app"));
    assert_eq!(
        get(&c, &format!("{url}/jwt"), Some(&old_token), &[])
            .await
            .status,
        200
    );

    // The provider rotates: a token with the new kid makes the gateway fetch again.
    idp.set_keys(json!([new.jwk]));
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let r = get(
        &c,
        &format!("{url}/jwt"),
        Some(&new.sign(&claims("mobile-app"))),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(idp.jwks_hits(), 2);
    // The old key left the set: its token, admitted before, is refused now.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_invalid(
        &get(&c, &format!("{url}/jwt"), Some(&old_token), &[]).await,
        "removed key",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_over_https_with_a_private_ca_gives_the_issuer_and_keys() {
    let ca = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "test idp ca");
    let ca_cert = p.self_signed(&ca).unwrap();
    let issuer = rcgen::Issuer::new(p, ca);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut lp = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    lp.distinguished_name.push(rcgen::DnType::CommonName, "idp");
    let leaf = lp.signed_by(&leaf_key, &issuer).unwrap();
    let idp = Idp::start(Some((leaf.pem(), leaf_key.serialize_pem()))).await;
    let signer = Signer::es256("e1");
    idp.set_keys(json!([signer.jwk]));
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("idp-ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();

    let be = Backend::start("a", Kind::Echo).await;
    let yaml = format!(
        r#"
upstreams:
  u:
    targets: [{{ address: "{}" }}]
policies:
  oidc: {{ type: jwt, discovery: "{}/", ca: "{}", algorithms: [ES256] }}
routes:
  - name: r
    policies: [oidc]
    upstream: u
"#,
        be.addr,
        idp.url,
        ca_file.display()
    );
    let (_g, url, _admin) = embedded(&yaml);
    let c = Client::new();
    let mut cl = claims("someone");
    cl["iss"] = json!(format!("{}/", idp.url));
    let r = get(&c, &format!("{url}/x"), Some(&signer.sign(&cl)), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(
        idp.state
            .discovery_hits
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    // The discovered issuer is required.
    let r = get(
        &c,
        &format!("{url}/x"),
        Some(&signer.sign(&claims("someone"))),
        &[],
    )
    .await;
    assert_problem(&r, 401);
    assert_eq!(r.json()["detail"], "the token's issuer is not accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_is_down_gets_503_and_a_shared_secret_needs_none() {
    let be = Backend::start("a", Kind::Echo).await;
    let closed = free_port();
    let secret = "0123456789abcdef0123456789abcdef-hs";
    let yaml = format!(
        r#"
upstreams:
  u:
    targets: [{{ address: "{}" }}]
policies:
  remote: {{ type: jwt, jwks_url: "http://127.0.0.1:{closed}/jwks.json", timeout: 2s }}
  hs: {{ type: jwt, secret: "{secret}", algorithms: [HS256], query: access_token, hide_credentials: true }}
routes:
  - name: remote
    match: {{ path: {{ type: prefix, value: /remote }} }}
    policies: [remote]
    upstream: u
  - name: hs
    match: {{ path: {{ type: prefix, value: /hs }} }}
    policies: [hs]
    upstream: u
"#,
        be.addr
    );
    let (_g, url, _admin) = embedded(&yaml);
    let c = Client::new();
    let ec = Signer::es256("e1");
    let r = get(
        &c,
        &format!("{url}/remote"),
        Some(&ec.sign(&claims("x"))),
        &[],
    )
    .await;
    assert_problem(&r, 503);
    assert!(
        !r.body_text().contains(&closed.to_string()),
        "no internal detail: {}",
        r.body_text()
    );

    let t = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("hs-user"),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let r = get(&c, &format!("{url}/hs/p?a=1&access_token={t}"), None, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    let v = r.json();
    assert_eq!(v["headers"]["x-consumer"], "hs-user");
    assert_eq!(
        v["uri"], "/hs/p?a=1",
        "the token is hidden from the upstream"
    );
    let wrong = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("hs-user"),
        &EncodingKey::from_secret(b"another secret of thirty-two bytes!!"),
    )
    .unwrap();
    assert_problem(&get(&c, &format!("{url}/hs"), Some(&wrong), &[]).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_admits_by_the_tokens_scopes_and_roles() {
    let ec = Signer::es256("e1");
    let idp = Idp::start(None).await;
    idp.set_keys(json!([ec.jwk]));
    let be = Backend::start("a", Kind::Echo).await;
    let yaml = format!(
        r#"
upstreams:
  u:
    targets: [{{ address: "{}" }}]
policies:
  jwt: {{ type: jwt, jwks_url: "{}/jwks.json" }}
  scopes: {{ type: rbac, rules: [{{ methods: [GET], require_scopes: [orders:read] }},
                                {{ methods: [POST, PUT, DELETE], require_roles: [admin] }}] }}
routes:
  - name: orders
    policies: [jwt, scopes]
    upstream: u
"#,
        be.addr, idp.url
    );
    let (_g, url, _admin) = embedded(&yaml);
    let c = Client::new();
    let token = |scope: &str, roles: Value| {
        let mut cl = claims("someone");
        cl["scope"] = json!(scope);
        cl["roles"] = roles;
        ec.sign(&cl)
    };
    let reader = token("profile orders:read", json!([]));
    let admin = token("profile", json!(["admin"]));
    assert_eq!(
        get(&c, &format!("{url}/orders"), Some(&reader), &[])
            .await
            .status,
        200
    );
    let r = get(&c, &format!("{url}/orders"), Some(&admin), &[]).await;
    assert_problem(&r, 403);
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some("Bearer error=\"insufficient_scope\", scope=\"orders:read\"")
    );
    assert_problem(
        &send(
            &c,
            "POST",
            &format!("{url}/orders"),
            &[("authorization", &format!("Bearer {reader}"))],
        )
        .await,
        403,
    );
    let r = send(
        &c,
        "POST",
        &format!("{url}/orders"),
        &[("authorization", &format!("Bearer {admin}"))],
    )
    .await;
    assert_eq!(r.status, 200);
    // No rule covers PATCH: refused by default.
    assert_problem(
        &send(
            &c,
            "PATCH",
            &format!("{url}/orders"),
            &[("authorization", &format!("Bearer {admin}"))],
        )
        .await,
        403,
    );
    assert_problem(&get(&c, &format!("{url}/orders"), None, &[]).await, 401);
}
