//! The services Moat answers for, their wire protocols, and the operations
//! implemented so far with the IAM action each one is authorised as.

/// The wire protocols of the AWS APIs Moat serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// JSON bodies, operation in `X-Amz-Target`, `application/x-amz-json-1.0`.
    AwsJson10,
    /// As 1.0 with `application/x-amz-json-1.1`.
    AwsJson11,
    /// Form-encoded `Action=...&Version=...`, XML answers.
    AwsQuery,
    /// EC2's dialect of the query protocol, with its own error envelope.
    Ec2Query,
}

impl Protocol {
    pub fn is_json(self) -> bool {
        matches!(self, Protocol::AwsJson10 | Protocol::AwsJson11)
    }
}

/// Every service Moat routes; those without operations yet answer that the
/// operation is unknown, as AWS does for an operation it does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Sts,
    Iam,
    DynamoDb,
    Kms,
    Rds,
    Redshift,
    ElastiCache,
    Ec2,
    Sns,
}

struct ServiceInfo {
    service: Service,
    /// The SigV4 signing name, also the IAM action prefix.
    signing_name: &'static str,
    protocol: Protocol,
    /// The `X-Amz-Target` prefix of JSON services.
    target_prefix: Option<&'static str>,
    /// The `Version` of query services.
    api_version: Option<&'static str>,
}

const SERVICES: &[ServiceInfo] = &[
    ServiceInfo {
        service: Service::Sts,
        signing_name: "sts",
        protocol: Protocol::AwsQuery,
        target_prefix: None,
        api_version: Some("2011-06-15"),
    },
    ServiceInfo {
        service: Service::Iam,
        signing_name: "iam",
        protocol: Protocol::AwsQuery,
        target_prefix: None,
        api_version: Some("2010-05-08"),
    },
    ServiceInfo {
        service: Service::DynamoDb,
        signing_name: "dynamodb",
        protocol: Protocol::AwsJson10,
        target_prefix: Some("DynamoDB_20120810"),
        api_version: None,
    },
    ServiceInfo {
        service: Service::Kms,
        signing_name: "kms",
        protocol: Protocol::AwsJson11,
        target_prefix: Some("TrentService"),
        api_version: None,
    },
    ServiceInfo {
        service: Service::Rds,
        signing_name: "rds",
        protocol: Protocol::AwsQuery,
        target_prefix: None,
        api_version: Some("2014-10-31"),
    },
    ServiceInfo {
        service: Service::Redshift,
        signing_name: "redshift",
        protocol: Protocol::AwsQuery,
        target_prefix: None,
        api_version: Some("2012-12-01"),
    },
    ServiceInfo {
        service: Service::ElastiCache,
        signing_name: "elasticache",
        protocol: Protocol::AwsQuery,
        target_prefix: None,
        api_version: Some("2015-02-02"),
    },
    ServiceInfo {
        service: Service::Ec2,
        signing_name: "ec2",
        protocol: Protocol::Ec2Query,
        target_prefix: None,
        api_version: Some("2016-11-15"),
    },
    ServiceInfo {
        service: Service::Sns,
        signing_name: "sns",
        protocol: Protocol::AwsQuery,
        target_prefix: None,
        api_version: Some("2010-03-31"),
    },
];

impl Service {
    fn info(self) -> &'static ServiceInfo {
        SERVICES
            .iter()
            .find(|i| i.service == self)
            .expect("every service has an entry in SERVICES")
    }

    pub fn from_signing_name(name: &str) -> Option<Service> {
        SERVICES
            .iter()
            .find(|i| i.signing_name == name)
            .map(|i| i.service)
    }

    pub fn from_target_prefix(prefix: &str) -> Option<Service> {
        SERVICES
            .iter()
            .find(|i| i.target_prefix == Some(prefix))
            .map(|i| i.service)
    }

    pub fn from_api_version(version: &str) -> Option<Service> {
        SERVICES
            .iter()
            .find(|i| i.api_version == Some(version))
            .map(|i| i.service)
    }

    pub fn signing_name(self) -> &'static str {
        self.info().signing_name
    }

    pub fn protocol(self) -> Protocol {
        self.info().protocol
    }

    pub fn target_prefix(self) -> Option<&'static str> {
        self.info().target_prefix
    }

    pub fn api_version(self) -> Option<&'static str> {
        self.info().api_version
    }

    /// The XML namespace of a query service's answers.
    pub fn xml_namespace(self) -> String {
        match self {
            Service::Ec2 => "http://ec2.amazonaws.com/doc/2016-11-15/".to_owned(),
            Service::Rds => "http://rds.amazonaws.com/doc/2014-10-31/".to_owned(),
            Service::Redshift => "http://redshift.amazonaws.com/doc/2012-12-01/".to_owned(),
            Service::ElastiCache => "http://elasticache.amazonaws.com/doc/2015-02-02/".to_owned(),
            Service::Sns => "http://sns.amazonaws.com/doc/2010-03-31/".to_owned(),
            other => format!(
                "https://{}.amazonaws.com/doc/{}/",
                other.signing_name(),
                other.api_version().unwrap_or_default()
            ),
        }
    }
}

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authorization {
    /// Any verified principal; AWS asks no permission (e.g. `GetCallerIdentity`).
    AnyPrincipal,
    /// The handler asks the evaluator itself, with what only it knows: the
    /// role's trust policy (`AssumeRole*`), or two actions (`kms:ReEncryptFrom`
    /// and `kms:ReEncryptTo`).
    Handler,
    /// The principal needs this IAM action allowed by policy.
    Action(&'static str),
}

struct OperationInfo {
    operation: Operation,
    service: Service,
    name: &'static str,
    authorization: Authorization,
    /// True where AWS accepts unsigned calls (`AssumeRoleWithWebIdentity`).
    anonymous: bool,
}

macro_rules! authorization {
    (any, $action:expr) => {
        (Authorization::AnyPrincipal, false)
    };
    (handler, $action:expr) => {
        (Authorization::Handler, false)
    };
    (anonymous, $action:expr) => {
        (Authorization::Handler, true)
    };
    (action, $action:expr) => {
        (Authorization::Action($action), false)
    };
}

macro_rules! operation_name {
    ($variant:ident) => {
        stringify!($variant)
    };
    ($variant:ident, $name:literal) => {
        $name
    };
}

macro_rules! operations {
    ($($variant:ident $(= $name:literal)? => $service:ident, $prefix:literal, $auth:ident;)*) => {
        /// The operations Moat implements, named as AWS names them (where two
        /// services share a name, the variant carries the service's prefix).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Operation {
            $($variant,)*
        }

        /// The one table of operations: every row is checked by a test that
        /// the IAM action is `signing-name:Name`.
        const OPERATIONS: &[OperationInfo] = &[
            $(OperationInfo {
                operation: Operation::$variant,
                service: Service::$service,
                name: operation_name!($variant $(, $name)?),
                authorization: authorization!($auth, concat!($prefix, ":", operation_name!($variant $(, $name)?))).0,
                anonymous: authorization!($auth, "").1,
            },)*
        ];
    };
}

operations! {
    GetCallerIdentity => Sts, "sts", any;
    GetSessionToken => Sts, "sts", any;
    AssumeRole => Sts, "sts", handler;
    AssumeRoleWithWebIdentity => Sts, "sts", anonymous;
    CreateUser => Iam, "iam", action;
    GetUser => Iam, "iam", action;
    ListUsers => Iam, "iam", action;
    DeleteUser => Iam, "iam", action;
    TagUser => Iam, "iam", action;
    UntagUser => Iam, "iam", action;
    ListUserTags => Iam, "iam", action;
    CreateGroup => Iam, "iam", action;
    GetGroup => Iam, "iam", action;
    ListGroups => Iam, "iam", action;
    DeleteGroup => Iam, "iam", action;
    AddUserToGroup => Iam, "iam", action;
    RemoveUserFromGroup => Iam, "iam", action;
    ListGroupsForUser => Iam, "iam", action;
    CreateRole => Iam, "iam", action;
    GetRole => Iam, "iam", action;
    ListRoles => Iam, "iam", action;
    DeleteRole => Iam, "iam", action;
    UpdateRole => Iam, "iam", action;
    UpdateAssumeRolePolicy => Iam, "iam", action;
    TagRole => Iam, "iam", action;
    UntagRole => Iam, "iam", action;
    ListRoleTags => Iam, "iam", action;
    CreateAccessKey => Iam, "iam", action;
    ListAccessKeys => Iam, "iam", action;
    UpdateAccessKey => Iam, "iam", action;
    DeleteAccessKey => Iam, "iam", action;
    CreatePolicy => Iam, "iam", action;
    GetPolicy => Iam, "iam", action;
    GetPolicyVersion => Iam, "iam", action;
    CreatePolicyVersion => Iam, "iam", action;
    ListPolicyVersions => Iam, "iam", action;
    DeletePolicyVersion => Iam, "iam", action;
    SetDefaultPolicyVersion => Iam, "iam", action;
    ListPolicies => Iam, "iam", action;
    DeletePolicy => Iam, "iam", action;
    AttachUserPolicy => Iam, "iam", action;
    DetachUserPolicy => Iam, "iam", action;
    ListAttachedUserPolicies => Iam, "iam", action;
    AttachGroupPolicy => Iam, "iam", action;
    DetachGroupPolicy => Iam, "iam", action;
    ListAttachedGroupPolicies => Iam, "iam", action;
    AttachRolePolicy => Iam, "iam", action;
    DetachRolePolicy => Iam, "iam", action;
    ListAttachedRolePolicies => Iam, "iam", action;
    PutUserPolicy => Iam, "iam", action;
    GetUserPolicy => Iam, "iam", action;
    ListUserPolicies => Iam, "iam", action;
    DeleteUserPolicy => Iam, "iam", action;
    PutGroupPolicy => Iam, "iam", action;
    GetGroupPolicy => Iam, "iam", action;
    ListGroupPolicies => Iam, "iam", action;
    DeleteGroupPolicy => Iam, "iam", action;
    PutRolePolicy => Iam, "iam", action;
    GetRolePolicy => Iam, "iam", action;
    ListRolePolicies => Iam, "iam", action;
    DeleteRolePolicy => Iam, "iam", action;
    PutUserPermissionsBoundary => Iam, "iam", action;
    DeleteUserPermissionsBoundary => Iam, "iam", action;
    PutRolePermissionsBoundary => Iam, "iam", action;
    DeleteRolePermissionsBoundary => Iam, "iam", action;
    CreateOpenIDConnectProvider => Iam, "iam", action;
    GetOpenIDConnectProvider => Iam, "iam", action;
    ListOpenIDConnectProviders => Iam, "iam", action;
    DeleteOpenIDConnectProvider => Iam, "iam", action;
    AddClientIDToOpenIDConnectProvider => Iam, "iam", action;
    RemoveClientIDFromOpenIDConnectProvider => Iam, "iam", action;
    UpdateOpenIDConnectProviderThumbprint => Iam, "iam", action;
    SimulatePrincipalPolicy => Iam, "iam", action;
    SimulateCustomPolicy => Iam, "iam", action;
    CreateKey => Kms, "kms", action;
    DescribeKey => Kms, "kms", action;
    ListKeys => Kms, "kms", action;
    CreateAlias => Kms, "kms", action;
    ListAliases => Kms, "kms", action;
    DeleteAlias => Kms, "kms", action;
    Encrypt => Kms, "kms", action;
    Decrypt => Kms, "kms", action;
    GenerateDataKey => Kms, "kms", action;
    GenerateDataKeyWithoutPlaintext => Kms, "kms", action;
    EnableKey => Kms, "kms", action;
    DisableKey => Kms, "kms", action;
    EnableKeyRotation => Kms, "kms", action;
    DisableKeyRotation => Kms, "kms", action;
    GetKeyRotationStatus => Kms, "kms", action;
    RotateKeyOnDemand => Kms, "kms", action;
    ScheduleKeyDeletion => Kms, "kms", action;
    CancelKeyDeletion => Kms, "kms", action;
    TagResource => Kms, "kms", action;
    UntagResource => Kms, "kms", action;
    ListResourceTags => Kms, "kms", action;
    ReEncrypt => Kms, "kms", handler;
    CreateTable => DynamoDb, "dynamodb", action;
    DescribeTable => DynamoDb, "dynamodb", action;
    ListTables => DynamoDb, "dynamodb", action;
    DeleteTable => DynamoDb, "dynamodb", action;
    UpdateTable => DynamoDb, "dynamodb", action;
    DescribeLimits => DynamoDb, "dynamodb", action;
    DescribeEndpoints => DynamoDb, "dynamodb", action;
    UpdateTimeToLive => DynamoDb, "dynamodb", action;
    DescribeTimeToLive => DynamoDb, "dynamodb", action;
    PutItem => DynamoDb, "dynamodb", action;
    GetItem => DynamoDb, "dynamodb", action;
    DeleteItem => DynamoDb, "dynamodb", action;
    UpdateItem => DynamoDb, "dynamodb", action;
    Query => DynamoDb, "dynamodb", action;
    Scan => DynamoDb, "dynamodb", action;
    DdbTagResource = "TagResource" => DynamoDb, "dynamodb", action;
    DdbUntagResource = "UntagResource" => DynamoDb, "dynamodb", action;
    ListTagsOfResource => DynamoDb, "dynamodb", action;
    CreateBackup => DynamoDb, "dynamodb", action;
    DescribeBackup => DynamoDb, "dynamodb", action;
    ListBackups => DynamoDb, "dynamodb", action;
    DeleteBackup => DynamoDb, "dynamodb", action;
    RestoreTableFromBackup => DynamoDb, "dynamodb", action;
    UpdateContinuousBackups => DynamoDb, "dynamodb", action;
    DescribeContinuousBackups => DynamoDb, "dynamodb", action;
    RestoreTableToPointInTime => DynamoDb, "dynamodb", action;
    ExportTableToPointInTime => DynamoDb, "dynamodb", action;
    DescribeExport => DynamoDb, "dynamodb", action;
    ListExports => DynamoDb, "dynamodb", action;
    ImportTable => DynamoDb, "dynamodb", action;
    DescribeImport => DynamoDb, "dynamodb", action;
    ListImports => DynamoDb, "dynamodb", action;
    TransactWriteItems => DynamoDb, "dynamodb", handler;
    TransactGetItems => DynamoDb, "dynamodb", handler;
    BatchGetItem => DynamoDb, "dynamodb", handler;
    BatchWriteItem => DynamoDb, "dynamodb", handler;
}

impl Operation {
    fn info(self) -> &'static OperationInfo {
        // The table is generated in declaration order, so the discriminant indexes it.
        &OPERATIONS[self as usize]
    }

    pub fn resolve(service: Service, name: &str) -> Option<Operation> {
        OPERATIONS
            .iter()
            .find(|i| i.service == service && i.name == name)
            .map(|i| i.operation)
    }

    pub fn name(self) -> &'static str {
        self.info().name
    }

    pub fn service(self) -> Service {
        self.info().service
    }

    pub fn authorization(self) -> Authorization {
        self.info().authorization
    }

    pub fn allows_anonymous(self) -> bool {
        self.info().anonymous
    }

    /// A DynamoDB operation that only reads the last commit (on a reader
    /// connection or the item cache) and never waits for a writer: it runs
    /// in place on its worker, where handing the worker off would cost more
    /// than the read.
    pub fn is_quick_read(self) -> bool {
        matches!(
            self,
            Operation::GetItem
                | Operation::Query
                | Operation::BatchGetItem
                | Operation::ListTables
                | Operation::DescribeTimeToLive
                | Operation::DescribeContinuousBackups
                | Operation::DescribeLimits
                | Operation::DescribeEndpoints
        )
    }

    /// Every operation, for tests and documentation.
    pub fn all() -> impl Iterator<Item = Operation> {
        OPERATIONS.iter().map(|i| i.operation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_table_is_consistent() {
        for op in Operation::all() {
            assert_eq!(Operation::resolve(op.service(), op.name()), Some(op));
            if let Authorization::Action(action) = op.authorization() {
                assert_eq!(
                    action,
                    format!("{}:{}", op.service().signing_name(), op.name()),
                    "the IAM action of {op:?}"
                );
            }
        }
        assert_eq!(
            Operation::GetCallerIdentity.authorization(),
            Authorization::AnyPrincipal,
            "AWS asks no permission for GetCallerIdentity"
        );
        assert!(Operation::AssumeRoleWithWebIdentity.allows_anonymous());
        assert_eq!(
            Operation::CreateUser.authorization(),
            Authorization::Action("iam:CreateUser")
        );
    }

    #[test]
    fn services_round_trip_through_their_names() {
        for info in SERVICES {
            let s = info.service;
            assert_eq!(Service::from_signing_name(s.signing_name()), Some(s));
            if let Some(p) = s.target_prefix() {
                assert!(s.protocol().is_json());
                assert_eq!(Service::from_target_prefix(p), Some(s));
            }
            if let Some(v) = s.api_version() {
                assert!(!s.protocol().is_json());
                assert_eq!(Service::from_api_version(v), Some(s));
            }
        }
        assert_eq!(
            Service::Sts.xml_namespace(),
            "https://sts.amazonaws.com/doc/2011-06-15/"
        );
    }
}
