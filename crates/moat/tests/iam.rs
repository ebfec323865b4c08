//! IAM and STS through the AWS SDK for Rust: the life cycles of users, groups,
//! roles, policies and providers with AWS's errors; authorisation by policy
//! end to end; role sessions and their session policies; persistence.

mod common;

use aws_credential_types::Credentials;
use aws_sdk_iam::error::ProvideErrorMetadata;
use common::{Moat, RawRequest, Signer, TempDir};

#[path = "common/sdk.rs"]
mod sdk;
use sdk::code;
use sdk::root;
use sdk::{iam_client, sts_client};

/// The error code of a failed SDK call.
fn message<T, E: ProvideErrorMetadata>(result: Result<T, E>) -> String {
    match result {
        Ok(_) => panic!("the call succeeded where an error was expected"),
        Err(e) => e.message().unwrap_or("").to_owned(),
    }
}

fn decode(doc: &str) -> String {
    let mut out = Vec::new();
    let bytes = doc.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&doc[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

const ALLOW_ALL_IAM_READ: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Read","Effect":"Allow","Action":["iam:Get*","iam:List*"],"Resource":"*"}]}"#;

#[tokio::test(flavor = "multi_thread")]
async fn iam_life_cycles_and_errors() {
    let dir = TempDir::new("iam");
    let moat = Moat::must_start(dir.path());
    let iam = iam_client(&moat, root(&moat));
    let account = moat.account.clone();

    // Users.
    let alice = iam
        .create_user()
        .user_name("alice")
        .path("/team/")
        .tags(
            aws_sdk_iam::types::Tag::builder()
                .key("dept")
                .value("orders")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let user = alice.user().unwrap();
    assert_eq!(
        user.arn(),
        format!("arn:aws:iam::{account}:user/team/alice")
    );
    assert!(user.user_id().starts_with("AIDA"));
    assert_eq!(
        code(iam.create_user().user_name("Alice").send().await),
        "EntityAlreadyExists"
    );
    assert_eq!(
        code(iam.get_user().user_name("nobody").send().await),
        "NoSuchEntity"
    );
    assert_eq!(
        code(iam.create_user().user_name("bad name!").send().await),
        "ValidationError"
    );
    let got = iam.get_user().user_name("alice").send().await.unwrap();
    assert_eq!(got.user().unwrap().tags().len(), 1);
    iam.create_user().user_name("bob").send().await.unwrap();
    let listed = iam.list_users().send().await.unwrap();
    assert_eq!(listed.users().len(), 2);
    let page = iam.list_users().max_items(1).send().await.unwrap();
    assert!(page.is_truncated());
    let rest = iam
        .list_users()
        .marker(page.marker().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(rest.users().len(), 1);
    assert!(!rest.is_truncated());

    // Access keys: at most two, the secret only once, status changes take effect.
    let k1 = iam
        .create_access_key()
        .user_name("alice")
        .send()
        .await
        .unwrap();
    let k1 = k1.access_key().unwrap();
    assert!(k1.access_key_id().starts_with("AKIA"));
    assert_eq!(k1.secret_access_key().len(), 40);
    let k2 = iam
        .create_access_key()
        .user_name("alice")
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(iam.create_access_key().user_name("alice").send().await),
        "LimitExceeded"
    );
    let keys = iam
        .list_access_keys()
        .user_name("alice")
        .send()
        .await
        .unwrap();
    assert_eq!(keys.access_key_metadata().len(), 2);
    let alice_sts = sts_client(
        &moat,
        Credentials::new(
            k1.access_key_id(),
            k1.secret_access_key(),
            None,
            None,
            "alice",
        ),
    );
    let who = alice_sts.get_caller_identity().send().await.unwrap();
    assert_eq!(
        who.arn(),
        Some(format!("arn:aws:iam::{account}:user/team/alice").as_str())
    );
    iam.update_access_key()
        .user_name("alice")
        .access_key_id(k1.access_key_id())
        .status(aws_sdk_iam::types::StatusType::Inactive)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(alice_sts.get_caller_identity().send().await),
        "InvalidClientTokenId"
    );
    let k2_id = k2.access_key().unwrap().access_key_id().to_owned();
    iam.delete_access_key()
        .user_name("alice")
        .access_key_id(&k2_id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(
            iam.delete_access_key()
                .user_name("alice")
                .access_key_id(&k2_id)
                .send()
                .await
        ),
        "NoSuchEntity"
    );
    assert_eq!(
        code(iam.delete_user().user_name("alice").send().await),
        "DeleteConflict"
    );

    // Groups.
    iam.create_group()
        .group_name("readers")
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(iam.create_group().group_name("readers").send().await),
        "EntityAlreadyExists"
    );
    iam.add_user_to_group()
        .group_name("readers")
        .user_name("alice")
        .send()
        .await
        .unwrap();
    let group = iam.get_group().group_name("readers").send().await.unwrap();
    assert_eq!(group.users().len(), 1);
    let groups = iam
        .list_groups_for_user()
        .user_name("alice")
        .send()
        .await
        .unwrap();
    assert_eq!(groups.groups()[0].group_name(), "readers");
    assert_eq!(
        code(iam.delete_group().group_name("readers").send().await),
        "DeleteConflict"
    );

    // Managed policies and their versions.
    let policy = iam
        .create_policy()
        .policy_name("orders-rw")
        .policy_document(ALLOW_ALL_IAM_READ)
        .send()
        .await
        .unwrap();
    let arn = policy.policy().unwrap().arn().unwrap().to_owned();
    assert_eq!(arn, format!("arn:aws:iam::{account}:policy/orders-rw"));
    let malformed = iam
        .create_policy()
        .policy_name("bad")
        .policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:GetUser"}]}"#,
        )
        .send()
        .await;
    assert_eq!(code(malformed), "MalformedPolicyDocument");
    for i in 2..=5 {
        let v = iam
            .create_policy_version()
            .policy_arn(&arn)
            .policy_document(ALLOW_ALL_IAM_READ)
            .set_as_default(i == 3)
            .send()
            .await
            .unwrap();
        assert_eq!(
            v.policy_version().unwrap().version_id(),
            Some(format!("v{i}").as_str())
        );
    }
    assert_eq!(
        code(
            iam.create_policy_version()
                .policy_arn(&arn)
                .policy_document(ALLOW_ALL_IAM_READ)
                .send()
                .await
        ),
        "LimitExceeded"
    );
    let got = iam.get_policy().policy_arn(&arn).send().await.unwrap();
    assert_eq!(got.policy().unwrap().default_version_id(), Some("v3"));
    let version = iam
        .get_policy_version()
        .policy_arn(&arn)
        .version_id("v3")
        .send()
        .await
        .unwrap();
    assert_eq!(
        decode(version.policy_version().unwrap().document().unwrap()),
        ALLOW_ALL_IAM_READ
    );
    assert_eq!(
        code(
            iam.delete_policy_version()
                .policy_arn(&arn)
                .version_id("v3")
                .send()
                .await
        ),
        "DeleteConflict"
    );
    iam.delete_policy_version()
        .policy_arn(&arn)
        .version_id("v5")
        .send()
        .await
        .unwrap();
    assert_eq!(
        iam.list_policy_versions()
            .policy_arn(&arn)
            .send()
            .await
            .unwrap()
            .versions()
            .len(),
        4
    );

    // Attachments and inline policies.
    iam.attach_group_policy()
        .group_name("readers")
        .policy_arn(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(iam.delete_policy().policy_arn(&arn).send().await),
        "DeleteConflict"
    );
    let attached = iam
        .list_attached_group_policies()
        .group_name("readers")
        .send()
        .await
        .unwrap();
    assert_eq!(
        attached.attached_policies()[0].policy_name(),
        Some("orders-rw")
    );
    assert_eq!(
        code(
            iam.attach_user_policy()
                .user_name("alice")
                .policy_arn(format!("{arn}x"))
                .send()
                .await
        ),
        "NoSuchEntity"
    );
    iam.put_user_policy()
        .user_name("alice")
        .policy_name("inline-one")
        .policy_document(ALLOW_ALL_IAM_READ)
        .send()
        .await
        .unwrap();
    let inline = iam
        .get_user_policy()
        .user_name("alice")
        .policy_name("inline-one")
        .send()
        .await
        .unwrap();
    assert_eq!(decode(inline.policy_document()), ALLOW_ALL_IAM_READ);
    assert_eq!(
        iam.list_user_policies()
            .user_name("alice")
            .send()
            .await
            .unwrap()
            .policy_names(),
        ["inline-one"]
    );
    iam.delete_user_policy()
        .user_name("alice")
        .policy_name("inline-one")
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(
            iam.get_user_policy()
                .user_name("alice")
                .policy_name("inline-one")
                .send()
                .await
        ),
        "NoSuchEntity"
    );

    // Roles.
    let trust = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{account}:root"}},"Action":"sts:AssumeRole"}}]}}"#
    );
    let role = iam
        .create_role()
        .role_name("orders")
        .path("/app/")
        .assume_role_policy_document(&trust)
        .max_session_duration(7200)
        .send()
        .await
        .unwrap();
    assert_eq!(
        role.role().unwrap().arn(),
        format!("arn:aws:iam::{account}:role/app/orders")
    );
    assert_eq!(
        code(
            iam.create_role()
                .role_name("r2")
                .assume_role_policy_document(&trust)
                .max_session_duration(60)
                .send()
                .await
        ),
        "ValidationError"
    );
    assert_eq!(
        code(
            iam.create_role()
                .role_name("r3")
                .assume_role_policy_document(ALLOW_ALL_IAM_READ)
                .send()
                .await
        ),
        "MalformedPolicyDocument"
    );
    let got = iam.get_role().role_name("orders").send().await.unwrap();
    assert_eq!(
        decode(got.role().unwrap().assume_role_policy_document().unwrap()),
        trust
    );
    iam.tag_role()
        .role_name("orders")
        .tags(
            aws_sdk_iam::types::Tag::builder()
                .key("team")
                .value("a")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        iam.list_role_tags()
            .role_name("orders")
            .send()
            .await
            .unwrap()
            .tags()
            .len(),
        1
    );
    iam.untag_role()
        .role_name("orders")
        .tag_keys("team")
        .send()
        .await
        .unwrap();
    assert!(iam
        .list_role_tags()
        .role_name("orders")
        .send()
        .await
        .unwrap()
        .tags()
        .is_empty());
    iam.put_role_permissions_boundary()
        .role_name("orders")
        .permissions_boundary(&arn)
        .send()
        .await
        .unwrap();
    let bounded = iam.get_role().role_name("orders").send().await.unwrap();
    assert_eq!(
        bounded
            .role()
            .unwrap()
            .permissions_boundary()
            .unwrap()
            .permissions_boundary_arn(),
        Some(arn.as_str())
    );
    iam.delete_role_permissions_boundary()
        .role_name("orders")
        .send()
        .await
        .unwrap();

    // OpenID Connect providers.
    let provider = iam
        .create_open_id_connect_provider()
        .url("https://idp.example.com/tenant")
        .client_id_list("app-1")
        .thumbprint_list("9e99a48a9960b14926bb7f3b02e22da2b0ab7280")
        .send()
        .await
        .unwrap();
    let parn = provider.open_id_connect_provider_arn().unwrap().to_owned();
    assert_eq!(
        parn,
        format!("arn:aws:iam::{account}:oidc-provider/idp.example.com/tenant")
    );
    assert_eq!(
        code(
            iam.create_open_id_connect_provider()
                .url("https://idp.example.com/tenant")
                .send()
                .await
        ),
        "EntityAlreadyExists"
    );
    iam.add_client_id_to_open_id_connect_provider()
        .open_id_connect_provider_arn(&parn)
        .client_id("app-2")
        .send()
        .await
        .unwrap();
    iam.remove_client_id_from_open_id_connect_provider()
        .open_id_connect_provider_arn(&parn)
        .client_id("app-1")
        .send()
        .await
        .unwrap();
    let got = iam
        .get_open_id_connect_provider()
        .open_id_connect_provider_arn(&parn)
        .send()
        .await
        .unwrap();
    assert_eq!(got.client_id_list(), ["app-2"]);
    assert_eq!(got.url(), Some("idp.example.com/tenant"));
    assert_eq!(
        iam.list_open_id_connect_providers()
            .send()
            .await
            .unwrap()
            .open_id_connect_provider_list()
            .len(),
        1
    );
    iam.delete_open_id_connect_provider()
        .open_id_connect_provider_arn(&parn)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(
            iam.get_open_id_connect_provider()
                .open_id_connect_provider_arn(&parn)
                .send()
                .await
        ),
        "NoSuchEntity"
    );

    // Simulation through the same evaluator.
    iam.put_user_policy()
        .user_name("alice")
        .policy_name("deny-bob")
        .policy_document(format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"NoBob","Effect":"Deny","Action":"iam:GetUser","Resource":"arn:aws:iam::{account}:user/bob"}}]}}"#
        ))
        .send()
        .await
        .unwrap();
    let sim = iam
        .simulate_principal_policy()
        .policy_source_arn(format!("arn:aws:iam::{account}:user/team/alice"))
        .action_names("iam:GetUser")
        .action_names("iam:CreateUser")
        .resource_arns(format!("arn:aws:iam::{account}:user/bob"))
        .resource_arns(format!("arn:aws:iam::{account}:user/carol"))
        .send()
        .await
        .unwrap();
    let decisions: Vec<(String, String, String)> = sim
        .evaluation_results()
        .iter()
        .map(|r| {
            (
                r.eval_action_name().to_owned(),
                r.eval_resource_name()
                    .unwrap_or_default()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned(),
                r.eval_decision().as_str().to_owned(),
            )
        })
        .collect();
    let expect = |a: &str, r: &str, d: &str| (a.to_owned(), r.to_owned(), d.to_owned());
    assert_eq!(
        decisions,
        [
            expect("iam:GetUser", "bob", "explicitDeny"),
            expect("iam:GetUser", "carol", "allowed"),
            expect("iam:CreateUser", "bob", "implicitDeny"),
            expect("iam:CreateUser", "carol", "implicitDeny"),
        ]
    );
    let custom = iam
        .simulate_custom_policy()
        .policy_input_list(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"dynamodb:GetItem","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]}"#,
        )
        .action_names("dynamodb:GetItem")
        .context_entries(
            aws_sdk_iam::types::ContextEntry::builder()
                .context_key_name("aws:SourceIp")
                .context_key_values("10.1.2.3")
                .context_key_type(aws_sdk_iam::types::ContextKeyTypeEnum::Ip)
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        custom.evaluation_results()[0].eval_decision().as_str(),
        "allowed"
    );

    // Everything survives a restart, including keys that work.
    let k1_id = k1.access_key_id().to_owned();
    let k1_secret = k1.secret_access_key().to_owned();
    drop(iam);
    drop(moat);
    let moat = Moat::must_start(dir.path());
    let iam = iam_client(&moat, root(&moat));
    assert_eq!(iam.list_users().send().await.unwrap().users().len(), 2);
    assert_eq!(
        iam.get_policy()
            .policy_arn(&arn)
            .send()
            .await
            .unwrap()
            .policy()
            .unwrap()
            .default_version_id(),
        Some("v3")
    );
    iam.update_access_key()
        .user_name("alice")
        .access_key_id(&k1_id)
        .status(aws_sdk_iam::types::StatusType::Active)
        .send()
        .await
        .unwrap();
    let alice_sts = sts_client(
        &moat,
        Credentials::new(&k1_id, &k1_secret, None, None, "alice"),
    );
    assert!(alice_sts.get_caller_identity().send().await.is_ok());
    // The state lives in the encrypted store: no file holds it in plaintext.
    assert!(!dir.path().join("state/iam.json").exists());
    let system = std::fs::read(dir.path().join("state/system.db")).unwrap();
    assert!(!system.windows(9).any(|w| w == b"orders-rw"));
}

#[tokio::test(flavor = "multi_thread")]
async fn policies_decide_and_role_sessions_narrow() {
    let dir = TempDir::new("authz");
    let moat = Moat::must_start(dir.path());
    let iam = iam_client(&moat, root(&moat));
    let account = moat.account.clone();

    // alice reads IAM through her group, but an explicit deny keeps her from bob.
    iam.create_user().user_name("alice").send().await.unwrap();
    iam.create_user().user_name("bob").send().await.unwrap();
    iam.create_group()
        .group_name("readers")
        .send()
        .await
        .unwrap();
    iam.add_user_to_group()
        .group_name("readers")
        .user_name("alice")
        .send()
        .await
        .unwrap();
    iam.put_group_policy()
        .group_name("readers")
        .policy_name("read")
        .policy_document(ALLOW_ALL_IAM_READ)
        .send()
        .await
        .unwrap();
    iam.put_user_policy()
        .user_name("alice")
        .policy_name("not-bob")
        .policy_document(format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"NoBob","Effect":"Deny","Action":"iam:*","Resource":"arn:aws:iam::{account}:user/bob"}},{{"Sid":"Assume","Effect":"Allow","Action":"sts:AssumeRole","Resource":"arn:aws:iam::{account}:role/orders"}}]}}"#
        ))
        .send()
        .await
        .unwrap();
    let key = iam
        .create_access_key()
        .user_name("alice")
        .send()
        .await
        .unwrap();
    let key = key.access_key().unwrap();
    let alice_creds = Credentials::new(
        key.access_key_id(),
        key.secret_access_key(),
        None,
        None,
        "alice",
    );
    let alice = iam_client(&moat, alice_creds.clone());

    assert_eq!(alice.list_users().send().await.unwrap().users().len(), 2);
    assert!(alice.get_user().user_name("alice").send().await.is_ok());
    let denied = alice.get_user().user_name("bob").send().await;
    assert_eq!(
        message(denied),
        format!(
            "User: arn:aws:iam::{account}:user/alice is not authorized to perform: iam:GetUser on resource: arn:aws:iam::{account}:user/bob with an explicit deny in an identity-based policy"
        )
    );
    // The request's own keys reach a live decision: alice calls from
    // loopback, so only the deny on a loopback source applies.
    iam.put_user_policy()
        .user_name("alice")
        .policy_name("by-source")
        .policy_document(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Deny","Action":"iam:ListRoles","Resource":"*","Condition":{"NotIpAddress":{"aws:SourceIp":"127.0.0.0/8"}}},
                {"Effect":"Deny","Action":"iam:ListPolicies","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"127.0.0.0/8"}}}]}"#,
        )
        .send()
        .await
        .unwrap();
    assert!(alice.list_roles().send().await.is_ok());
    assert!(message(alice.list_policies().send().await).contains("with an explicit deny"));
    iam.delete_user_policy()
        .user_name("alice")
        .policy_name("by-source")
        .send()
        .await
        .unwrap();
    assert!(alice.list_policies().send().await.is_ok());
    let not_allowed = alice.create_user().user_name("mallory").send().await;
    assert_eq!(
        message(not_allowed),
        format!(
            "User: arn:aws:iam::{account}:user/alice is not authorized to perform: iam:CreateUser on resource: arn:aws:iam::{account}:user/mallory because no identity-based policy allows the iam:CreateUser action"
        )
    );
    assert_eq!(
        code(alice.create_user().user_name("mallory").send().await),
        "AccessDenied"
    );
    // The audit line of the explicit deny names the deciding statement.
    let deny_line = moat.must_find_audit_where("the denial", |l| {
        l["operation"] == "GetUser" && l["outcome"] == "denied"
    });
    assert!(
        deny_line["decided_by"].as_str().unwrap().contains("NoBob"),
        "{deny_line}"
    );
    assert_eq!(
        deny_line["resource"],
        format!("arn:aws:iam::{account}:user/bob")
    );

    // A role alice may assume; its session policy narrows what the session may do.
    let trust = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{account}:root"}},"Action":"sts:AssumeRole"}}]}}"#
    );
    iam.create_role()
        .role_name("orders")
        .assume_role_policy_document(&trust)
        .send()
        .await
        .unwrap();
    iam.put_role_policy()
        .role_name("orders")
        .policy_name("read")
        .policy_document(ALLOW_ALL_IAM_READ)
        .send()
        .await
        .unwrap();
    let alice_sts = sts_client(&moat, alice_creds.clone());
    let session_policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:ListUsers","Resource":"*"}]}"#;
    let assumed = alice_sts
        .assume_role()
        .role_arn(format!("arn:aws:iam::{account}:role/orders"))
        .role_session_name("s1")
        .policy(session_policy)
        .send()
        .await
        .unwrap();
    let c = assumed.credentials().unwrap();
    assert!(c.access_key_id().starts_with("ASIA"));
    assert_eq!(
        assumed.assumed_role_user().unwrap().arn(),
        format!("arn:aws:sts::{account}:assumed-role/orders/s1")
    );
    let session_creds = Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_owned()),
        None,
        "session",
    );
    let session_iam = iam_client(&moat, session_creds.clone());
    assert_eq!(
        session_iam.list_users().send().await.unwrap().users().len(),
        2
    );
    let narrowed = session_iam.list_roles().send().await;
    assert!(
        message(narrowed).ends_with("because no session policy allows the iam:ListRoles action"),
        "the session policy narrows the role"
    );
    let session_sts = sts_client(&moat, session_creds);
    let who = session_sts.get_caller_identity().send().await.unwrap();
    assert_eq!(
        who.arn(),
        Some(format!("arn:aws:sts::{account}:assumed-role/orders/s1").as_str())
    );

    // bob has no permission to assume the role; too long a session is refused.
    let bob_key = iam
        .create_access_key()
        .user_name("bob")
        .send()
        .await
        .unwrap();
    let bob_key = bob_key.access_key().unwrap();
    let bob_sts = sts_client(
        &moat,
        Credentials::new(
            bob_key.access_key_id(),
            bob_key.secret_access_key(),
            None,
            None,
            "bob",
        ),
    );
    let role_arn = format!("arn:aws:iam::{account}:role/orders");
    assert_eq!(
        code(
            bob_sts
                .assume_role()
                .role_arn(&role_arn)
                .role_session_name("s2")
                .send()
                .await
        ),
        "AccessDenied"
    );
    assert_eq!(
        code(
            alice_sts
                .assume_role()
                .role_arn(&role_arn)
                .role_session_name("s2")
                .duration_seconds(7200)
                .send()
                .await
        ),
        "ValidationError"
    );

    // An ExternalId the trust policy requires, and PolicyArns as session policies.
    let partner_trust = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{account}:user/alice"}},"Action":"sts:AssumeRole","Condition":{{"StringEquals":{{"sts:ExternalId":"ticket-42"}}}}}}]}}"#
    );
    iam.create_role()
        .role_name("partner")
        .assume_role_policy_document(&partner_trust)
        .send()
        .await
        .unwrap();
    iam.put_role_policy()
        .role_name("partner")
        .policy_name("read")
        .policy_document(ALLOW_ALL_IAM_READ)
        .send()
        .await
        .unwrap();
    let partner_arn = format!("arn:aws:iam::{account}:role/partner");
    assert_eq!(
        code(
            alice_sts
                .assume_role()
                .role_arn(&partner_arn)
                .role_session_name("p1")
                .send()
                .await
        ),
        "AccessDenied",
        "no ExternalId"
    );
    assert_eq!(
        code(
            alice_sts
                .assume_role()
                .role_arn(&partner_arn)
                .role_session_name("p1")
                .external_id("ticket-41")
                .send()
                .await
        ),
        "AccessDenied",
        "the wrong ExternalId"
    );
    let only_roles = iam
        .create_policy()
        .policy_name("only-list-roles")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:ListRoles","Resource":"*"}]}"#)
        .send()
        .await
        .unwrap();
    // The trust policy names alice herself, so her own policies need not allow the role.
    let partner = alice_sts
        .assume_role()
        .role_arn(&partner_arn)
        .role_session_name("p1")
        .external_id("ticket-42")
        .policy_arns(
            aws_sdk_sts::types::PolicyDescriptorType::builder()
                .arn(only_roles.policy().unwrap().arn().unwrap())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let pc = partner.credentials().unwrap();
    let partner_iam = iam_client(
        &moat,
        Credentials::new(
            pc.access_key_id(),
            pc.secret_access_key(),
            Some(pc.session_token().to_owned()),
            None,
            "p",
        ),
    );
    assert!(partner_iam.list_roles().send().await.is_ok());
    assert_eq!(code(partner_iam.list_users().send().await), "AccessDenied");

    // A permissions boundary caps what alice's own policies grant.
    iam.put_user_permissions_boundary()
        .user_name("alice")
        .permissions_boundary(only_roles.policy().unwrap().arn().unwrap())
        .send()
        .await
        .unwrap();
    assert!(alice.list_roles().send().await.is_ok());
    assert!(message(alice.list_users().send().await)
        .ends_with("because no permissions boundary allows the iam:ListUsers action"));
    iam.delete_user_permissions_boundary()
        .user_name("alice")
        .send()
        .await
        .unwrap();
    assert!(alice.list_users().send().await.is_ok());

    // GetSessionToken: temporary credentials that act as alice.
    let token = alice_sts
        .get_session_token()
        .duration_seconds(900)
        .send()
        .await
        .unwrap();
    let t = token.credentials().unwrap();
    let temp = sts_client(
        &moat,
        Credentials::new(
            t.access_key_id(),
            t.secret_access_key(),
            Some(t.session_token().to_owned()),
            None,
            "t",
        ),
    );
    assert_eq!(
        temp.get_caller_identity().send().await.unwrap().arn(),
        Some(format!("arn:aws:iam::{account}:user/alice").as_str())
    );

    // A session token that was tampered with is refused.
    // One character in the middle changed to another: a last character can
    // be replaced by itself, or carry only padding bits.
    let mut chars: Vec<char> = t.session_token().chars().collect();
    let middle = chars.len() / 2;
    chars[middle] = if chars[middle] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    let forged = sts_client(
        &moat,
        Credentials::new(
            t.access_key_id(),
            t.secret_access_key(),
            Some(tampered),
            None,
            "t",
        ),
    );
    assert_eq!(
        code(forged.get_caller_identity().send().await),
        "InvalidClientTokenId"
    );
    // So is a session key without its token.
    let (id, secret) = (
        t.access_key_id().to_owned(),
        t.secret_access_key().to_owned(),
    );
    let bare =
        RawRequest::sts_get_caller_identity(moat.port).signed(&Signer::new(&id, &secret, "sts"));
    assert_eq!(
        bare.send(moat.port, &moat.ca_pem()).error_code(),
        "InvalidClientTokenId"
    );
}

/// Where Debian's libfaketime is (scripts/test installs it).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[tokio::test(flavor = "multi_thread")]
async fn expired_session_credentials_are_refused() {
    let dir = TempDir::new("expiry");
    let moat = Moat::must_start(dir.path());
    let sts = sts_client(&moat, root(&moat));
    let out = sts
        .get_session_token()
        .duration_seconds(900)
        .send()
        .await
        .unwrap();
    let c = out.credentials().unwrap();
    let signer = Signer {
        token: Some(c.session_token().to_owned()),
        ..Signer::new(c.access_key_id(), c.secret_access_key(), "sts")
    };
    let fresh = RawRequest::sts_get_caller_identity(moat.port).signed(&signer);
    assert_eq!(fresh.send(moat.port, &moat.ca_pem()).status, 200);
    drop(moat);

    // The same Moat an hour later (its clock moved by libfaketime), and a
    // client whose clock agrees: the signature is current, the token is not.
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "libfaketime is installed by scripts/test"
    );
    let later = Moat::must_start_with(
        dir.path(),
        &[],
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME", "+1h"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let in_an_hour = Signer {
        time: std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
        ..signer
    };
    let expired = RawRequest::sts_get_caller_identity(later.port)
        .signed(&in_an_hour)
        .send(later.port, &later.ca_pem());
    assert_eq!(
        (expired.status, expired.error_code().as_str()),
        (403, "ExpiredToken")
    );
    assert!(expired
        .body
        .contains("The security token included in the request is expired"));
    let ddb = RawRequest::dynamodb(later.port, "ListTables", "{}")
        .signed(&Signer {
            service: "dynamodb".into(),
            ..in_an_hour.clone()
        })
        .send(later.port, &later.ca_pem());
    assert_eq!(
        (ddb.status, ddb.error_code().as_str()),
        (400, "ExpiredTokenException")
    );
}
