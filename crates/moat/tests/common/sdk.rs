//! AWS SDK clients for a running Moat, trusting only its CA.

#![allow(dead_code)]

use aws_credential_types::Credentials;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

use crate::common::Moat;

pub fn http_client(moat: &Moat) -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .tls_context(
            TlsContext::builder()
                .with_trust_store(
                    TrustStore::empty()
                        .with_native_roots(false)
                        .with_pem_certificate(moat.ca_pem()),
                )
                .build()
                .unwrap(),
        )
        .build_https()
}

pub fn iam_client(moat: &Moat, creds: Credentials) -> aws_sdk_iam::Client {
    let config = aws_sdk_iam::Config::builder()
        .behavior_version(aws_sdk_iam::config::BehaviorVersion::latest())
        .region(aws_sdk_iam::config::Region::new("us-east-1"))
        .endpoint_url(&moat.endpoint)
        .credentials_provider(creds)
        .http_client(http_client(moat))
        .build();
    aws_sdk_iam::Client::from_conf(config)
}

pub fn sts_client(moat: &Moat, creds: Credentials) -> aws_sdk_sts::Client {
    let config = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new("us-east-1"))
        .endpoint_url(&moat.endpoint)
        .credentials_provider(creds)
        .http_client(http_client(moat))
        .build();
    aws_sdk_sts::Client::from_conf(config)
}

/// An STS client without credentials, for the unsigned `AssumeRoleWithWebIdentity`.
pub fn sts_client_anonymous(moat: &Moat) -> aws_sdk_sts::Client {
    let config = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new("us-east-1"))
        .endpoint_url(&moat.endpoint)
        .http_client(http_client(moat))
        .build();
    aws_sdk_sts::Client::from_conf(config)
}

pub fn kms_client(moat: &Moat, creds: Credentials) -> aws_sdk_kms::Client {
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new("us-east-1"))
        .endpoint_url(&moat.endpoint)
        .credentials_provider(creds)
        .http_client(http_client(moat))
        .build();
    aws_sdk_kms::Client::from_conf(config)
}

/// The account's root credentials, as the `moat` profile holds them.
pub fn root(moat: &Moat) -> Credentials {
    let (id, secret) = moat.root_credentials();
    Credentials::new(id, secret, None, None, "root")
}

/// The error code of a call that must fail (it panics if the call succeeded).
pub fn code<T, E: aws_smithy_types::error::metadata::ProvideErrorMetadata>(
    result: Result<T, E>,
) -> String {
    match result {
        Ok(_) => panic!("the call succeeded where an error was expected"),
        Err(e) => e.code().unwrap_or("<none>").to_owned(),
    }
}

pub fn dynamodb_client(moat: &Moat, creds: Credentials) -> aws_sdk_dynamodb::Client {
    dynamodb_client_at(moat, &moat.endpoint, creds)
}

/// A DynamoDB client of another region of the deployment.
pub fn dynamodb_client_in(
    moat: &Moat,
    region: &str,
    creds: Credentials,
) -> aws_sdk_dynamodb::Client {
    dynamodb_client_of(moat, &moat.endpoint, region, creds)
}

pub fn dynamodb_client_at(
    moat: &Moat,
    endpoint: &str,
    creds: Credentials,
) -> aws_sdk_dynamodb::Client {
    dynamodb_client_of(moat, endpoint, "us-east-1", creds)
}

fn dynamodb_client_of(
    moat: &Moat,
    endpoint: &str,
    region: &str,
    creds: Credentials,
) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new(region.to_owned()))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .http_client(http_client(moat))
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// An attribute definition for CreateTable or UpdateTable.
pub fn def(
    name: &str,
    kind: aws_sdk_dynamodb::types::ScalarAttributeType,
) -> aws_sdk_dynamodb::types::AttributeDefinition {
    aws_sdk_dynamodb::types::AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(kind)
        .build()
        .unwrap()
}

/// One element of a key schema.
pub fn ks(
    name: &str,
    kind: aws_sdk_dynamodb::types::KeyType,
) -> aws_sdk_dynamodb::types::KeySchemaElement {
    aws_sdk_dynamodb::types::KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .unwrap()
}

/// A global secondary index for CreateTable: its partition key, its sort
/// key if any, and what it projects.
pub fn global_index(
    name: &str,
    hash: &str,
    range: Option<&str>,
    projection: aws_sdk_dynamodb::types::ProjectionType,
) -> aws_sdk_dynamodb::types::GlobalSecondaryIndex {
    use aws_sdk_dynamodb::types::{GlobalSecondaryIndex, KeyType, Projection};
    let mut index = GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(ks(hash, KeyType::Hash));
    if let Some(range) = range {
        index = index.key_schema(ks(range, KeyType::Range));
    }
    index
        .projection(Projection::builder().projection_type(projection).build())
        .build()
        .unwrap()
}
