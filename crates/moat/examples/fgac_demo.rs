//! Fine-grained access control, end to end, for a newcomer to run:
//! `examples/fgac/run.sh` (it builds Moat and this program, then runs it).
//!
//! A tiny OpenID Connect issuer (a key pair and its key set, served over
//! HTTPS on loopback) signs tokens for alice and bob. The program starts a
//! Moat that trusts that issuer, registers it, creates a role whose policy is
//! AWS's "only your own items" example and a `GameScores` table, then shows
//! each user reading and writing their own items and being refused the
//! other's, with the error text AWS gives.

#[path = "../tests/common/issuer.rs"]
mod issuer;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

use aws_credential_types::Credentials;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue as AV, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use serde_json::json;

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http(ca: &[u8]) -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .tls_context(
            TlsContext::builder()
                .with_trust_store(
                    TrustStore::empty()
                        .with_native_roots(false)
                        .with_pem_certificate(ca.to_vec()),
                )
                .build()
                .unwrap(),
        )
        .build_https()
}

fn report<T, E: ProvideErrorMetadata>(who: &str, what: &str, result: Result<T, E>) {
    match result {
        Ok(_) => println!("  {who:5} {what:32} allowed"),
        Err(e) => println!(
            "  {who:5} {what:32} refused: {}: {}",
            e.code().unwrap_or("?"),
            e.message().unwrap_or("")
        ),
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let moat_bin = std::env::args()
        .nth(1)
        .expect("usage: fgac_demo PATH-TO-MOAT");
    let issuer = issuer::start_issuer().await;
    let (signer, jwk) = issuer::Signer::ec("demo-key");
    issuer.keys.lock().unwrap().push(jwk);

    // A Moat of its own, trusting the issuer's CA.
    let data = std::env::temp_dir().join(format!("moat-fgac-demo-{}", std::process::id()));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("issuer-ca.pem"), &issuer.ca_pem).unwrap();
    std::fs::write(
        data.join("moat.toml"),
        format!(
            "oidc_ca_bundle = \"{}\"\n",
            data.join("issuer-ca.pem").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(&moat_bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "warn",
            "--data-dir",
        ])
        .arg(&data)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start moat");
    let stdout = child.stdout.take().unwrap();
    let _moat = Running(child);
    let mut endpoint = String::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("moat: serving ") {
            endpoint = rest.split(' ').next().unwrap().to_owned();
            break;
        }
    }
    let ca = std::fs::read(data.join("tls/ca.pem")).unwrap();
    let creds = std::fs::read_to_string(data.join("aws/credentials")).unwrap();
    let field = |n: &str| {
        creds
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{n} = ")))
            .unwrap()
            .to_owned()
    };
    let root = Credentials::new(
        field("aws_access_key_id"),
        field("aws_secret_access_key"),
        None,
        None,
        "root",
    );
    println!(
        "Moat at {endpoint}, OpenID Connect issuer at {}",
        issuer.url
    );

    let iam = aws_sdk_iam::Client::from_conf(
        aws_sdk_iam::Config::builder()
            .behavior_version(aws_sdk_iam::config::BehaviorVersion::latest())
            .region(aws_sdk_iam::config::Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .credentials_provider(root.clone())
            .http_client(http(&ca))
            .build(),
    );
    let ddb = |c: Credentials| {
        aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::Config::builder()
                .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
                .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
                .endpoint_url(&endpoint)
                .credentials_provider(c)
                .http_client(http(&ca))
                .build(),
        )
    };
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::Config::builder()
            .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
            .region(aws_sdk_sts::config::Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .http_client(http(&ca))
            .build(),
    );

    let host = issuer.url.trim_start_matches("https://").to_owned();
    let provider = iam
        .create_open_id_connect_provider()
        .url(&issuer.url)
        .client_id_list("game")
        .send()
        .await
        .unwrap();
    let account = provider
        .open_id_connect_provider_arn()
        .unwrap()
        .split(':')
        .nth(4)
        .unwrap()
        .to_owned();
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Federated": provider.open_id_connect_provider_arn().unwrap()},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {format!("{host}:aud"): "game"}}}]});
    let policy = json!({"Version": "2012-10-17", "Statement": [{"Sid": "FullAccessToUserItems", "Effect": "Allow",
        "Action": ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:PutItem",
                   "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"],
        "Resource": [format!("arn:aws:dynamodb:us-east-1:{account}:table/GameScores")],
        "Condition": {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [format!("${{{host}:sub}}")]}}}]});
    iam.create_role()
        .role_name("GameRole")
        .assume_role_policy_document(trust.to_string())
        .send()
        .await
        .unwrap();
    iam.put_role_policy()
        .role_name("GameRole")
        .policy_name("own-items")
        .policy_document(policy.to_string())
        .send()
        .await
        .unwrap();
    ddb(root)
        .create_table()
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
    println!("Registered the provider, created GameRole (policy: only items whose UserId is ${{{host}:sub}}) and GameScores.\n");

    for (me, other) in [("alice", "bob"), ("bob", "alice")] {
        let token = signer.token(
            "demo-key",
            &json!({"iss": issuer.url, "sub": me, "aud": "game", "iat": issuer::now(), "exp": issuer::now() + 3600}),
        );
        let out = sts
            .assume_role_with_web_identity()
            .role_arn(format!("arn:aws:iam::{account}:role/GameRole"))
            .role_session_name(me)
            .web_identity_token(token)
            .send()
            .await
            .unwrap();
        let c = out.credentials().unwrap();
        println!("{me} signed in: {}", out.assumed_role_user().unwrap().arn());
        let db = ddb(Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_owned()),
            None,
            me,
        ));
        let item = |user: &str| {
            std::collections::HashMap::from([
                ("UserId".to_owned(), AV::S(user.into())),
                ("GameTitle".to_owned(), AV::S("chess".into())),
            ])
        };
        report(
            me,
            &format!("PutItem {me}/chess"),
            db.put_item()
                .table_name("GameScores")
                .set_item(Some(item(me)))
                .send()
                .await,
        );
        report(
            me,
            &format!("GetItem {me}/chess"),
            db.get_item()
                .table_name("GameScores")
                .set_key(Some(item(me)))
                .send()
                .await,
        );
        report(
            me,
            &format!("PutItem {other}/chess"),
            db.put_item()
                .table_name("GameScores")
                .set_item(Some(item(other)))
                .send()
                .await,
        );
        report(
            me,
            &format!("GetItem {other}/chess"),
            db.get_item()
                .table_name("GameScores")
                .set_key(Some(item(other)))
                .send()
                .await,
        );
        report(
            me,
            "Scan GameScores",
            db.scan().table_name("GameScores").send().await,
        );
        println!();
    }
    let _ = std::fs::remove_dir_all(&data);
}
