//! Web identity federation end to end: a test OpenID Connect issuer served
//! over HTTPS on loopback, tokens it signs turned into role credentials by
//! the unsigned `AssumeRoleWithWebIdentity`, and every kind of bad token refused.

mod common;

use aws_credential_types::Credentials;
use aws_sdk_sts::error::ProvideErrorMetadata;
use common::{Moat, TempDir};
use moat_sts::jwt::base64url_encode as b64;
use serde_json::json;

#[path = "common/issuer.rs"]
mod issuer;
use issuer::{now, start_issuer, Issuer, Signer};

#[path = "common/sdk.rs"]
mod sdk;
use sdk::{dynamodb_client, iam_client, sts_client_anonymous};

fn code<T, E: ProvideErrorMetadata>(result: Result<T, E>) -> String {
    match result {
        Ok(_) => panic!("the call succeeded where an error was expected"),
        Err(e) => e.code().unwrap_or("<none>").to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn web_identity_tokens_become_role_credentials() {
    let issuer = start_issuer().await;
    let dir = TempDir::new("webid");
    std::fs::create_dir_all(dir.path()).unwrap();
    let ca_path = dir.path().join("idp-ca.pem");
    std::fs::write(&ca_path, &issuer.ca_pem).unwrap();
    std::fs::write(
        dir.path().join("moat.toml"),
        format!("oidc_ca_bundle = \"{}\"\n", ca_path.display()),
    )
    .unwrap();
    let (rsa, rsa_jwk) = Signer::rsa(dir.path());
    let (ec, ec_jwk) = Signer::ec("ec1");
    issuer.keys.lock().unwrap().extend([rsa_jwk, ec_jwk]);

    let moat = Moat::must_start(dir.path());
    let account = moat.account.clone();
    let (id, secret) = moat.root_credentials();
    let iam = iam_client(&moat, Credentials::new(id, secret, None, None, "root"));
    let host = issuer.url.trim_start_matches("https://").to_owned();

    let provider = iam
        .create_open_id_connect_provider()
        .url(&issuer.url)
        .client_id_list("moat-app")
        .client_id_list("other-app")
        .send()
        .await
        .unwrap();
    let provider_arn = provider.open_id_connect_provider_arn().unwrap().to_owned();
    let trust = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {format!("{host}:aud"): "moat-app"}}
        }]
    });
    iam.create_role()
        .role_name("web")
        .assume_role_policy_document(trust.to_string())
        .send()
        .await
        .unwrap();
    let permissions = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": "iam:GetUser",
            "Resource": format!("arn:aws:iam::{account}:user/${{{host}:sub}}")
        }]
    });
    iam.put_role_policy()
        .role_name("web")
        .policy_name("own-user")
        .policy_document(permissions.to_string())
        .send()
        .await
        .unwrap();
    iam.create_user().user_name("u-123").send().await.unwrap();
    iam.create_user().user_name("other").send().await.unwrap();

    let claims = |aud: &str, exp: i64| json!({"iss": issuer.url, "sub": "u-123", "aud": aud, "iat": now() - 10, "exp": exp});
    let role_arn = format!("arn:aws:iam::{account}:role/web");
    let sts = sts_client_anonymous(&moat);
    let assume = |token: String| {
        sts.assume_role_with_web_identity()
            .role_arn(&role_arn)
            .role_session_name("web-session")
            .web_identity_token(token)
            .send()
    };

    // A good RS256 token: credentials whose policy uses ${HOST:sub}.
    let out = assume(rsa.token("rsa1", &claims("moat-app", now() + 600)))
        .await
        .unwrap();
    assert_eq!(out.subject_from_web_identity_token(), Some("u-123"));
    assert_eq!(out.audience(), Some("moat-app"));
    assert_eq!(
        out.assumed_role_user().unwrap().arn(),
        format!("arn:aws:sts::{account}:assumed-role/web/web-session")
    );
    let c = out.credentials().unwrap();
    let session = iam_client(
        &moat,
        Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_owned()),
            None,
            "web",
        ),
    );
    assert!(session.get_user().user_name("u-123").send().await.is_ok());
    assert_eq!(
        code(session.get_user().user_name("other").send().await),
        "AccessDenied"
    );

    // ES256 works too.
    assert!(assume(ec.token("ec1", &claims("moat-app", now() + 600)))
        .await
        .is_ok());

    // Refusals: expired, wrong audience, audience the trust policy does not
    // accept, altered signature, alg none, unknown issuer.
    assert_eq!(
        code(assume(rsa.token("rsa1", &claims("moat-app", now() - 3600))).await),
        "ExpiredTokenException"
    );
    assert_eq!(
        code(assume(rsa.token("rsa1", &claims("someone-else", now() + 600))).await),
        "InvalidIdentityToken"
    );
    assert_eq!(
        code(assume(rsa.token("rsa1", &claims("other-app", now() + 600))).await),
        "AccessDenied"
    );
    let good = rsa.token("rsa1", &claims("moat-app", now() + 600));
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged_payload = b64(
        json!({"iss": issuer.url, "sub": "other", "aud": "moat-app", "exp": now() + 600})
            .to_string()
            .as_bytes(),
    );
    parts[1] = &forged_payload;
    assert_eq!(code(assume(parts.join(".")).await), "InvalidIdentityToken");
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","kid":"rsa1"}"#),
        b64(claims("moat-app", now() + 600).to_string().as_bytes())
    );
    assert_eq!(code(assume(none).await), "InvalidIdentityToken");
    let stranger = json!({"iss": "https://stranger.example", "sub": "u-123", "aud": "moat-app", "exp": now() + 600});
    assert_eq!(
        code(assume(rsa.token("rsa1", &stranger)).await),
        "InvalidIdentityToken"
    );

    // The issuer rotates in a new key: Moat fetches the key set again for the unknown kid.
    let (ec2, ec2_jwk) = Signer::ec("ec2");
    issuer.keys.lock().unwrap().push(ec2_jwk);
    assert!(assume(ec2.token("ec2", &claims("moat-app", now() + 600)))
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn key_sets_can_come_from_files_for_sites_without_a_way_out() {
    let dir = TempDir::new("webid-file");
    std::fs::create_dir_all(dir.path()).unwrap();
    let (ec, jwk) = Signer::ec("offline-1");
    let jwks_path = dir.path().join("offline-jwks.json");
    std::fs::write(&jwks_path, json!({"keys": [jwk]}).to_string()).unwrap();
    let issuer = "https://idp.offline.invalid";
    std::fs::write(
        dir.path().join("moat.toml"),
        format!(
            "[oidc_jwks_files]\n\"{issuer}\" = \"{}\"\n",
            jwks_path.display()
        ),
    )
    .unwrap();
    let moat = Moat::must_start(dir.path());
    let account = moat.account.clone();
    let (id, secret) = moat.root_credentials();
    let iam = iam_client(&moat, Credentials::new(id, secret, None, None, "root"));
    let provider = iam
        .create_open_id_connect_provider()
        .url(issuer)
        .client_id_list("kiosk")
        .send()
        .await
        .unwrap();
    let trust = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": provider.open_id_connect_provider_arn().unwrap()},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringLike": {"idp.offline.invalid:sub": "kiosk-*"}}
        }]
    });
    iam.create_role()
        .role_name("kiosk")
        .assume_role_policy_document(trust.to_string())
        .send()
        .await
        .unwrap();
    let sts = sts_client_anonymous(&moat);
    let token = |sub: &str| {
        ec.token(
            "offline-1",
            &json!({"iss": issuer, "sub": sub, "aud": "kiosk", "exp": now() + 600}),
        )
    };
    let out = sts
        .assume_role_with_web_identity()
        .role_arn(format!("arn:aws:iam::{account}:role/kiosk"))
        .role_session_name("k1")
        .web_identity_token(token("kiosk-7"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.subject_from_web_identity_token(), Some("kiosk-7"));
    let refused = sts
        .assume_role_with_web_identity()
        .role_arn(format!("arn:aws:iam::{account}:role/kiosk"))
        .role_session_name("k2")
        .web_identity_token(token("visitor"))
        .send()
        .await;
    assert_eq!(code(refused), "AccessDenied");
}

mod fgac {
    //! Fine-grained access control: web identities reaching only their own
    //! items and only the attributes their role allows, by policy alone.

    use super::*;
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, AttributeValue as AV, BillingMode, KeySchemaElement, KeyType,
        KeysAndAttributes, PutRequest, ReturnValue, ScalarAttributeType, Select, WriteRequest,
    };
    use aws_sdk_dynamodb::Client;
    use std::collections::HashMap;

    fn s(v: &str) -> AV {
        AV::S(v.to_owned())
    }

    fn denied<T, E: ProvideErrorMetadata>(r: Result<T, E>) -> String {
        match r {
            Ok(_) => panic!("allowed where AWS denies"),
            Err(e) => {
                assert_eq!(e.code(), Some("AccessDeniedException"), "{:?}", e.message());
                e.message().unwrap_or_default().to_owned()
            }
        }
    }

    struct Setup {
        _issuer: Issuer,
        moat: Moat,
        signer: Signer,
        host: String,
        account: String,
    }

    async fn setup(dir: &TempDir) -> Setup {
        let issuer = start_issuer().await;
        std::fs::create_dir_all(dir.path()).unwrap();
        let ca_path = dir.path().join("idp-ca.pem");
        std::fs::write(&ca_path, &issuer.ca_pem).unwrap();
        std::fs::write(
            dir.path().join("moat.toml"),
            format!("oidc_ca_bundle = \"{}\"\n", ca_path.display()),
        )
        .unwrap();
        let (signer, jwk) = Signer::ec("k1");
        issuer.keys.lock().unwrap().push(jwk);
        let moat = Moat::must_start(dir.path());
        let account = moat.account.clone();
        let host = issuer.url.trim_start_matches("https://").to_owned();
        let (id, secret) = moat.root_credentials();
        let root = Credentials::new(id, secret, None, None, "root");
        let iam = iam_client(&moat, root.clone());
        let provider = iam
            .create_open_id_connect_provider()
            .url(&issuer.url)
            .client_id_list("game")
            .send()
            .await
            .unwrap();
        let trust = json!({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Federated": provider.open_id_connect_provider_arn().unwrap()},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {format!("{host}:aud"): "game"}}}]});
        let table = format!("arn:aws:dynamodb:us-east-1:{account}:table/GameScores");
        // AWS's example 1: only items whose partition key is the caller's id.
        let own_items = json!({"Version": "2012-10-17", "Statement": [{
            "Sid": "FullAccessToUserItems", "Effect": "Allow",
            "Action": ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:PutItem",
                       "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"],
            "Resource": [table],
            "Condition": {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [format!("${{{host}:sub}}")]}}}]});
        // AWS's example 2: only some attributes, never "all attributes", and
        // no ReturnValues that would show more.
        let some_attributes = json!({"Version": "2012-10-17", "Statement": [{
            "Sid": "LimitAccessToSpecificAttributes", "Effect": "Allow",
            "Action": ["dynamodb:UpdateItem", "dynamodb:GetItem", "dynamodb:Query", "dynamodb:BatchGetItem", "dynamodb:Scan"],
            "Resource": [table],
            "Condition": {
                "ForAllValues:StringEquals": {"dynamodb:Attributes": ["UserId", "GameTitle", "TopScore"]},
                "StringEqualsIfExists": {"dynamodb:Select": "SPECIFIC_ATTRIBUTES",
                                         "dynamodb:ReturnValues": ["NONE", "UPDATED_OLD", "UPDATED_NEW"]}}}]});
        for (role, policy) in [("GameRole", own_items), ("ScoresRole", some_attributes)] {
            iam.create_role()
                .role_name(role)
                .assume_role_policy_document(trust.to_string())
                .send()
                .await
                .unwrap();
            iam.put_role_policy()
                .role_name(role)
                .policy_name("p")
                .policy_document(policy.to_string())
                .send()
                .await
                .unwrap();
        }
        let db = dynamodb_client(&moat, root);
        db.create_table()
            .table_name("GameScores")
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("UserId")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("GameTitle")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("UserId")
                    .key_type(KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("GameTitle")
                    .key_type(KeyType::Range)
                    .build()
                    .unwrap(),
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .unwrap();
        let _ = issuer.url.clone();
        Setup {
            _issuer: issuer,
            moat,
            signer,
            host,
            account,
        }
    }

    async fn session(
        setup: &Setup,
        role: &str,
        sub: &str,
        duration: Option<i32>,
    ) -> (Client, Credentials) {
        let sts = sts_client_anonymous(&setup.moat);
        let token = setup.signer.token(
            "k1",
            &json!({"iss": setup._issuer.url, "sub": sub, "aud": "game", "iat": now() - 5, "exp": now() + 3600}),
        );
        let out = sts
            .assume_role_with_web_identity()
            .role_arn(format!("arn:aws:iam::{}:role/{role}", setup.account))
            .role_session_name(format!("s-{sub}"))
            .web_identity_token(token)
            .set_duration_seconds(duration)
            .send()
            .await
            .unwrap();
        let c = out.credentials().unwrap();
        let creds = Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_owned()),
            None,
            "web",
        );
        (dynamodb_client(&setup.moat, creds.clone()), creds)
    }

    fn key(user: &str, game: &str) -> HashMap<String, AV> {
        HashMap::from([
            ("UserId".to_owned(), s(user)),
            ("GameTitle".to_owned(), s(game)),
        ])
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn each_user_reaches_only_their_own_items() {
        let dir = TempDir::new("fgac-keys");
        let setup = setup(&dir).await;
        let (alice, _) = session(&setup, "GameRole", "alice", None).await;
        let (bob, _) = session(&setup, "GameRole", "bob", None).await;
        let t = "GameScores";

        // PutItem.
        alice
            .put_item()
            .table_name(t)
            .set_item(Some(key("alice", "chess")))
            .item("TopScore", AV::N("10".into()))
            .send()
            .await
            .unwrap();
        bob.put_item()
            .table_name(t)
            .set_item(Some(key("bob", "chess")))
            .item("TopScore", AV::N("20".into()))
            .send()
            .await
            .unwrap();
        let msg = denied(
            alice
                .put_item()
                .table_name(t)
                .set_item(Some(key("bob", "go")))
                .send()
                .await,
        );
        assert!(
            msg.starts_with(&format!("User: arn:aws:sts::{}:assumed-role/GameRole/s-alice is not authorized to perform: dynamodb:PutItem on resource: arn:aws:dynamodb:us-east-1:{}:table/GameScores", setup.account, setup.account)),
            "{msg}"
        );
        // GetItem.
        assert!(alice
            .get_item()
            .table_name(t)
            .set_key(Some(key("alice", "chess")))
            .send()
            .await
            .unwrap()
            .item()
            .is_some());
        denied(
            alice
                .get_item()
                .table_name(t)
                .set_key(Some(key("bob", "chess")))
                .send()
                .await,
        );
        // UpdateItem.
        alice
            .update_item()
            .table_name(t)
            .set_key(Some(key("alice", "chess")))
            .update_expression("SET TopScore = :v")
            .expression_attribute_values(":v", AV::N("11".into()))
            .send()
            .await
            .unwrap();
        denied(
            alice
                .update_item()
                .table_name(t)
                .set_key(Some(key("bob", "chess")))
                .update_expression("SET TopScore = :v")
                .expression_attribute_values(":v", AV::N("0".into()))
                .send()
                .await,
        );
        // Query.
        let own = alice
            .query()
            .table_name(t)
            .key_condition_expression("UserId = :u")
            .expression_attribute_values(":u", s("alice"))
            .send()
            .await
            .unwrap();
        assert_eq!(own.count(), 1);
        denied(
            alice
                .query()
                .table_name(t)
                .key_condition_expression("UserId = :u")
                .expression_attribute_values(":u", s("bob"))
                .send()
                .await,
        );
        // Scan: not in the policy, and a Scan has no leading keys anyway.
        denied(alice.scan().table_name(t).send().await);
        // BatchGetItem: refused whole when any key is another user's.
        let own_keys = KeysAndAttributes::builder()
            .keys(key("alice", "chess"))
            .build()
            .unwrap();
        assert_eq!(
            alice
                .batch_get_item()
                .request_items(t, own_keys)
                .send()
                .await
                .unwrap()
                .responses()
                .unwrap()[t]
                .len(),
            1
        );
        let mixed = KeysAndAttributes::builder()
            .keys(key("alice", "chess"))
            .keys(key("bob", "chess"))
            .build()
            .unwrap();
        denied(alice.batch_get_item().request_items(t, mixed).send().await);
        // BatchWriteItem likewise.
        let put = |u: &str, g: &str| {
            WriteRequest::builder()
                .put_request(
                    PutRequest::builder()
                        .set_item(Some(key(u, g)))
                        .build()
                        .unwrap(),
                )
                .build()
        };
        alice
            .batch_write_item()
            .request_items(t, vec![put("alice", "go"), put("alice", "poker")])
            .send()
            .await
            .unwrap();
        denied(
            alice
                .batch_write_item()
                .request_items(t, vec![put("alice", "x"), put("bob", "x")])
                .send()
                .await,
        );
        // TransactWriteItems: each action is authorised as itself, with the
        // transaction as its enclosing operation.
        let tput = |u: &str| {
            aws_sdk_dynamodb::types::TransactWriteItem::builder()
                .put(
                    aws_sdk_dynamodb::types::Put::builder()
                        .table_name("GameScores")
                        .set_item(Some(key(u, "tx")))
                        .build()
                        .unwrap(),
                )
                .build()
        };
        alice
            .transact_write_items()
            .transact_items(tput("alice"))
            .send()
            .await
            .unwrap();
        denied(
            alice
                .transact_write_items()
                .transact_items(tput("alice"))
                .transact_items(tput("bob"))
                .send()
                .await,
        );
        let tget = |u: &str| {
            aws_sdk_dynamodb::types::TransactGetItem::builder()
                .get(
                    aws_sdk_dynamodb::types::Get::builder()
                        .table_name("GameScores")
                        .set_key(Some(key(u, "tx")))
                        .build()
                        .unwrap(),
                )
                .build()
        };
        assert_eq!(
            alice
                .transact_get_items()
                .transact_items(tget("alice"))
                .send()
                .await
                .unwrap()
                .responses()
                .len(),
            1
        );
        denied(
            alice
                .transact_get_items()
                .transact_items(tget("bob"))
                .send()
                .await,
        );
        // DeleteItem.
        denied(
            alice
                .delete_item()
                .table_name(t)
                .set_key(Some(key("bob", "chess")))
                .send()
                .await,
        );
        alice
            .delete_item()
            .table_name(t)
            .set_key(Some(key("alice", "poker")))
            .send()
            .await
            .unwrap();

        // The denial is audited with the session's principal and the table.
        let line = setup
            .moat
            .must_find_audit_where("the denied DeleteItem", |l| {
                l["operation"] == "DeleteItem" && l["outcome"] == "denied"
            });
        assert_eq!(
            line["principal"],
            format!(
                "arn:aws:sts::{}:assumed-role/GameRole/s-alice",
                setup.account
            )
        );
        assert_eq!(
            line["resource"],
            format!(
                "arn:aws:dynamodb:us-east-1:{}:table/GameScores",
                setup.account
            )
        );
        assert_eq!(line["web_identity"], format!("{}:alice", setup.host));
        let why = line["decided_by"]
            .as_str()
            .expect("the failed condition is named");
        assert!(
            why.contains("FullAccessToUserItems")
                && why.contains("ForAllValues:String")
                && why.contains("dynamodb:leadingkeys"),
            "{why}"
        );

        // Concurrently, many tasks of both users: none ever changes the other's items.
        let mut tasks = Vec::new();
        for (client, me, other) in [
            (alice.clone(), "alice", "bob"),
            (bob.clone(), "bob", "alice"),
        ] {
            for w in 0..4 {
                let client = client.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..15 {
                        client
                            .put_item()
                            .table_name("GameScores")
                            .set_item(Some(key(me, &format!("g{w}-{i}"))))
                            .item("Writer", s(me))
                            .send()
                            .await
                            .unwrap();
                        let stolen = client
                            .put_item()
                            .table_name("GameScores")
                            .set_item(Some(key(other, &format!("g{w}-{i}"))))
                            .item("Writer", s(me))
                            .send()
                            .await;
                        assert!(stolen.is_err());
                        let peek = client
                            .get_item()
                            .table_name("GameScores")
                            .set_key(Some(key(other, "chess")))
                            .send()
                            .await;
                        assert!(peek.is_err());
                    }
                }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        let (id, secret) = setup.moat.root_credentials();
        let root = dynamodb_client(
            &setup.moat,
            Credentials::new(id, secret, None, None, "root"),
        );
        let all = root.scan().table_name("GameScores").send().await.unwrap();
        for item in all.items() {
            if let Some(writer) = item.get("Writer") {
                assert_eq!(
                    writer, &item["UserId"],
                    "an item written by the other user: {item:?}"
                );
            }
        }
        assert_eq!(
            all.items()
                .iter()
                .filter(|i| i.contains_key("Writer"))
                .count(),
            2 * 4 * 15
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn only_the_allowed_attributes_and_return_values() {
        let dir = TempDir::new("fgac-attrs");
        let setup = setup(&dir).await;
        let (id, secret) = setup.moat.root_credentials();
        let root = dynamodb_client(
            &setup.moat,
            Credentials::new(id, secret, None, None, "root"),
        );
        root.put_item()
            .table_name("GameScores")
            .set_item(Some(key("carol", "chess")))
            .item("TopScore", AV::N("5".into()))
            .item("Secret", s("hidden"))
            .send()
            .await
            .unwrap();
        let (carol, _) = session(&setup, "ScoresRole", "carol", None).await;
        let t = "GameScores";

        let ok = carol
            .get_item()
            .table_name(t)
            .set_key(Some(key("carol", "chess")))
            .projection_expression("UserId, TopScore")
            .send()
            .await
            .unwrap();
        assert_eq!(ok.item().unwrap().len(), 2);
        denied(
            carol
                .get_item()
                .table_name(t)
                .set_key(Some(key("carol", "chess")))
                .projection_expression("TopScore, Secret")
                .send()
                .await,
        );
        denied(
            carol
                .get_item()
                .table_name(t)
                .set_key(Some(key("carol", "chess")))
                .send()
                .await,
        );
        denied(
            carol
                .query()
                .table_name(t)
                .key_condition_expression("UserId = :u")
                .expression_attribute_values(":u", s("carol"))
                .send()
                .await,
        );
        let q = carol
            .query()
            .table_name(t)
            .key_condition_expression("UserId = :u")
            .expression_attribute_values(":u", s("carol"))
            .select(Select::SpecificAttributes)
            .projection_expression("GameTitle, TopScore")
            .send()
            .await
            .unwrap();
        assert_eq!(q.count(), 1);
        carol
            .update_item()
            .table_name(t)
            .set_key(Some(key("carol", "chess")))
            .update_expression("SET TopScore = :v")
            .expression_attribute_values(":v", AV::N("6".into()))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .unwrap();
        denied(
            carol
                .update_item()
                .table_name(t)
                .set_key(Some(key("carol", "chess")))
                .update_expression("SET Secret = :v")
                .expression_attribute_values(":v", s("mine"))
                .send()
                .await,
        );
        denied(
            carol
                .update_item()
                .table_name(t)
                .set_key(Some(key("carol", "chess")))
                .update_expression("SET TopScore = :v")
                .expression_attribute_values(":v", AV::N("7".into()))
                .return_values(ReturnValue::AllNew)
                .send()
                .await,
        );
        let scan = carol
            .scan()
            .table_name(t)
            .projection_expression("UserId, TopScore")
            .send()
            .await
            .unwrap();
        assert_eq!(scan.count(), 1);
        denied(carol.scan().table_name(t).send().await);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn web_identity_credentials_stop_at_their_expiry() {
        let dir = TempDir::new("fgac-expiry");
        let mut setup = setup(&dir).await;
        let (_, creds) = session(&setup, "GameRole", "dave", Some(900)).await;
        let request = |moat: &Moat, offset: u64| {
            let signer = common::Signer {
                time: std::time::SystemTime::now() + std::time::Duration::from_secs(offset),
                token: creds.session_token().map(str::to_owned),
                ..common::Signer::new(creds.access_key_id(), creds.secret_access_key(), "dynamodb")
            };
            common::RawRequest::dynamodb(
                moat.port,
                "GetItem",
                r#"{"TableName":"GameScores","Key":{"UserId":{"S":"dave"},"GameTitle":{"S":"chess"}}}"#,
            )
            .signed(&signer)
            .send(moat.port, &moat.ca_pem())
        };
        assert_eq!(request(&setup.moat, 0).status, 200);
        for (offset, expect_ok) in [(880u64, true), (920u64, false)] {
            setup.moat.must_stop();
            let shift = format!("+{offset}s");
            setup.moat = Moat::must_start_with(
                dir.path(),
                &[],
                &[
                    (
                        "LD_PRELOAD",
                        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                    ),
                    ("FAKETIME", shift.as_str()),
                    ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
                ],
            );
            let r = request(&setup.moat, offset);
            if expect_ok {
                assert_eq!(r.status, 200, "before expiry: {}", r.body);
            } else {
                assert_eq!(
                    (r.status, r.error_code().as_str()),
                    (400, "ExpiredTokenException"),
                    "after expiry"
                );
            }
        }
    }
}
