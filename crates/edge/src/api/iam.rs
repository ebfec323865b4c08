//! IAM (awsQuery 2010-05-08): parameters in, XML out.

use std::sync::Arc;

use moat_iam::{
    Caller, Group, IamError, IamErrorKind, IamState, KeyStatus, ManagedPolicy, OidcProvider,
    Principal, Role, Target, User,
};
use moat_policy::{Decision, Policy, PolicyKind};

use super::{paginate, url_encode, Ctx, Xml};
use crate::error::ApiError;
use crate::services::Operation;

/// The resource ARN an IAM operation acts on, for authorisation and the audit log.
pub fn resource(op: Operation, ctx: &Ctx<'_>, state: &IamState) -> String {
    use Operation::*;
    let account = &state.account;
    let p = |name: &str| ctx.optional(name).unwrap_or("");
    let path = || ctx.optional("Path").unwrap_or("/").to_owned();
    let user = |name: &str| match state.user(name) {
        Ok(u) => state.user_arn(u),
        Err(_) => format!("arn:aws:iam::{account}:user/{name}"),
    };
    let role = |name: &str| match state.role(name) {
        Ok(r) => state.role_arn(r),
        Err(_) => format!("arn:aws:iam::{account}:role/{name}"),
    };
    let group = |name: &str| match state.group(name) {
        Ok(g) => state.group_arn(g),
        Err(_) => format!("arn:aws:iam::{account}:group/{name}"),
    };
    match op {
        CreateUser => format!("arn:aws:iam::{account}:user{}{}", path(), p("UserName")),
        CreateRole => format!("arn:aws:iam::{account}:role{}{}", path(), p("RoleName")),
        CreateGroup => format!("arn:aws:iam::{account}:group{}{}", path(), p("GroupName")),
        CreatePolicy => format!("arn:aws:iam::{account}:policy{}{}", path(), p("PolicyName")),
        GetUser | CreateAccessKey | ListAccessKeys | UpdateAccessKey | DeleteAccessKey => {
            match ctx.optional("UserName") {
                Some(name) => user(name),
                None => ctx
                    .caller
                    .map(|c| c.principal.arn())
                    .unwrap_or_else(|| "*".into()),
            }
        }
        DeleteUser
        | TagUser
        | UntagUser
        | ListUserTags
        | ListGroupsForUser
        | AttachUserPolicy
        | DetachUserPolicy
        | ListAttachedUserPolicies
        | PutUserPolicy
        | GetUserPolicy
        | ListUserPolicies
        | DeleteUserPolicy
        | PutUserPermissionsBoundary
        | DeleteUserPermissionsBoundary => user(p("UserName")),
        GetGroup
        | DeleteGroup
        | AddUserToGroup
        | RemoveUserFromGroup
        | AttachGroupPolicy
        | DetachGroupPolicy
        | ListAttachedGroupPolicies
        | PutGroupPolicy
        | GetGroupPolicy
        | ListGroupPolicies
        | DeleteGroupPolicy => group(p("GroupName")),
        GetRole
        | DeleteRole
        | UpdateRole
        | UpdateAssumeRolePolicy
        | TagRole
        | UntagRole
        | ListRoleTags
        | AttachRolePolicy
        | DetachRolePolicy
        | ListAttachedRolePolicies
        | PutRolePolicy
        | GetRolePolicy
        | ListRolePolicies
        | DeleteRolePolicy
        | PutRolePermissionsBoundary
        | DeleteRolePermissionsBoundary => role(p("RoleName")),
        GetPolicy
        | GetPolicyVersion
        | CreatePolicyVersion
        | ListPolicyVersions
        | DeletePolicyVersion
        | SetDefaultPolicyVersion
        | DeletePolicy => p("PolicyArn").to_owned(),
        GetOpenIDConnectProvider
        | DeleteOpenIDConnectProvider
        | AddClientIDToOpenIDConnectProvider
        | RemoveClientIDFromOpenIDConnectProvider
        | UpdateOpenIDConnectProviderThumbprint => p("OpenIDConnectProviderArn").to_owned(),
        CreateOpenIDConnectProvider => format!(
            "arn:aws:iam::{account}:oidc-provider/{}",
            p("Url")
                .trim_start_matches("https://")
                .trim_end_matches('/')
        ),
        SimulatePrincipalPolicy => p("PolicySourceArn").to_owned(),
        _ => "*".to_owned(),
    }
}

fn user_xml(x: &mut Xml, state: &IamState, u: &User) {
    x.text("Path", &u.path)
        .text("UserName", &u.name)
        .text("UserId", &u.id)
        .text("Arn", &state.user_arn(u))
        .date("CreateDate", u.created);
    if let Some(b) = &u.boundary {
        x.open("PermissionsBoundary")
            .text("PermissionsBoundaryType", "PermissionsBoundaryPolicy")
            .text("PermissionsBoundaryArn", b)
            .close("PermissionsBoundary");
    }
    if !u.tags.is_empty() {
        x.tags(&u.tags);
    }
}

fn group_xml(x: &mut Xml, state: &IamState, g: &Group) {
    x.text("Path", &g.path)
        .text("GroupName", &g.name)
        .text("GroupId", &g.id)
        .text("Arn", &state.group_arn(g))
        .date("CreateDate", g.created);
}

fn role_xml(x: &mut Xml, state: &IamState, r: &Role) {
    x.text("Path", &r.path)
        .text("RoleName", &r.name)
        .text("RoleId", &r.id)
        .text("Arn", &state.role_arn(r))
        .date("CreateDate", r.created)
        .text("AssumeRolePolicyDocument", &url_encode(&r.trust.text))
        .opt("Description", r.description.as_deref())
        .text("MaxSessionDuration", &r.max_session_duration.to_string());
    if let Some(b) = &r.boundary {
        x.open("PermissionsBoundary")
            .text("PermissionsBoundaryType", "PermissionsBoundaryPolicy")
            .text("PermissionsBoundaryArn", b)
            .close("PermissionsBoundary");
    }
    if !r.tags.is_empty() {
        x.tags(&r.tags);
    }
}

fn policy_xml(x: &mut Xml, state: &IamState, p: &ManagedPolicy) {
    x.text("PolicyName", &p.name)
        .text("PolicyId", &p.id)
        .text("Arn", &p.arn)
        .text("Path", &p.path)
        .text("DefaultVersionId", &p.default_version)
        .text(
            "AttachmentCount",
            &state.attachment_count(&p.arn).to_string(),
        )
        .text(
            "PermissionsBoundaryUsageCount",
            &state.boundary_count(&p.arn).to_string(),
        )
        .text("IsAttachable", "true")
        .opt("Description", p.description.as_deref())
        .date("CreateDate", p.created)
        .date("UpdateDate", p.updated);
    if !p.tags.is_empty() {
        x.tags(&p.tags);
    }
}

fn provider_xml(x: &mut Xml, p: &OidcProvider) {
    x.text("Url", p.key_prefix())
        .strings("ClientIDList", &p.client_ids)
        .strings("ThumbprintList", &p.thumbprints)
        .date("CreateDate", p.created)
        .tags(&p.tags);
}

/// The user an operation names, or the calling user when `UserName` is absent.
fn user_name(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    if let Some(name) = ctx.optional("UserName") {
        return Ok(name.to_owned());
    }
    match ctx.caller.map(|c| &c.principal) {
        Some(Principal::User { name, .. }) => Ok(name.clone()),
        _ => Err(IamError::validation(
            "Must specify userName when calling with non-User credentials",
        )
        .into()),
    }
}

fn target<'a>(op: Operation, ctx: &'a Ctx<'_>) -> Result<Target<'a>, ApiError> {
    let name = op.name();
    if name.contains("User") {
        Ok(Target::User(ctx.required("UserName")?))
    } else if name.contains("Group") {
        Ok(Target::Group(ctx.required("GroupName")?))
    } else {
        Ok(Target::Role(ctx.required("RoleName")?))
    }
}

/// Runs an IAM operation and returns the XML inside its `<...Result>` element.
pub fn handle(op: Operation, ctx: &Ctx<'_>) -> Result<String, ApiError> {
    use Operation::*;
    let iam = ctx.iam;
    let now = ctx.now;
    let rng = ctx.rng;
    let mut x = Xml::new();
    match op {
        CreateUser => {
            let tags = ctx.tags();
            iam.mutate(|s| {
                let u = s
                    .create_user(
                        ctx.required("UserName").map_err(api_to_iam)?,
                        ctx.optional("Path"),
                        tags,
                        ctx.optional("PermissionsBoundary"),
                        now,
                        rng,
                    )?
                    .clone();
                x.open("User");
                user_xml(&mut x, s, &u);
                x.close("User");
                Ok(())
            })?;
        }
        GetUser => {
            let name = user_name(ctx)?;
            let s = iam.read();
            let u = s.user(&name)?;
            x.open("User");
            user_xml(&mut x, &s, u);
            x.close("User");
        }
        ListUsers => {
            let s = iam.read();
            let users = s.list_users(ctx.optional("PathPrefix"));
            let page = paginate(ctx, &users)?;
            x.members("Users", page.items, |x, u| user_xml(x, &s, u));
            x.page_end(&page);
        }
        DeleteUser => {
            iam.mutate(|s| s.delete_user(ctx.required("UserName").map_err(api_to_iam)?))?
        }
        TagUser => {
            let tags = ctx.tags();
            iam.mutate(|s| s.tag_user(ctx.required("UserName").map_err(api_to_iam)?, tags))?
        }
        UntagUser => {
            let keys = ctx.list("TagKeys");
            iam.mutate(|s| s.untag_user(ctx.required("UserName").map_err(api_to_iam)?, &keys))?
        }
        ListUserTags => {
            let s = iam.read();
            let u = s.user(ctx.required("UserName")?)?;
            x.tags(&u.tags).text("IsTruncated", "false");
        }
        CreateGroup => iam.mutate(|s| {
            let g = s
                .create_group(
                    ctx.required("GroupName").map_err(api_to_iam)?,
                    ctx.optional("Path"),
                    now,
                    rng,
                )?
                .clone();
            x.open("Group");
            group_xml(&mut x, s, &g);
            x.close("Group");
            Ok(())
        })?,
        GetGroup => {
            let s = iam.read();
            let g = s.group(ctx.required("GroupName")?)?;
            x.open("Group");
            group_xml(&mut x, &s, g);
            x.close("Group");
            let members = s.group_members(&g.name);
            let page = paginate(ctx, &members)?;
            x.members("Users", page.items, |x, u| user_xml(x, &s, u));
            x.page_end(&page);
        }
        ListGroups => {
            let s = iam.read();
            let groups = s.list_groups(ctx.optional("PathPrefix"));
            let page = paginate(ctx, &groups)?;
            x.members("Groups", page.items, |x, g| group_xml(x, &s, g));
            x.page_end(&page);
        }
        DeleteGroup => {
            iam.mutate(|s| s.delete_group(ctx.required("GroupName").map_err(api_to_iam)?))?
        }
        AddUserToGroup => iam.mutate(|s| {
            s.add_user_to_group(
                ctx.required("GroupName").map_err(api_to_iam)?,
                ctx.required("UserName").map_err(api_to_iam)?,
            )
        })?,
        RemoveUserFromGroup => iam.mutate(|s| {
            s.remove_user_from_group(
                ctx.required("GroupName").map_err(api_to_iam)?,
                ctx.required("UserName").map_err(api_to_iam)?,
            )
        })?,
        ListGroupsForUser => {
            let s = iam.read();
            let u = s.user(ctx.required("UserName")?)?;
            let groups: Vec<&Group> = u.groups.iter().filter_map(|g| s.group(g).ok()).collect();
            let page = paginate(ctx, &groups)?;
            x.members("Groups", page.items, |x, g| group_xml(x, &s, g));
            x.page_end(&page);
        }
        CreateRole => {
            let tags = ctx.tags();
            let max = ctx.integer("MaxSessionDuration")?;
            iam.mutate(|s| {
                let r = s
                    .create_role(
                        ctx.required("RoleName").map_err(api_to_iam)?,
                        ctx.optional("Path"),
                        ctx.required("AssumeRolePolicyDocument")
                            .map_err(api_to_iam)?,
                        ctx.optional("Description"),
                        max,
                        tags,
                        ctx.optional("PermissionsBoundary"),
                        now,
                        rng,
                    )?
                    .clone();
                x.open("Role");
                role_xml(&mut x, s, &r);
                x.close("Role");
                Ok(())
            })?;
        }
        GetRole => {
            let s = iam.read();
            let r = s.role(ctx.required("RoleName")?)?;
            x.open("Role");
            role_xml(&mut x, &s, r);
            x.close("Role");
        }
        ListRoles => {
            let s = iam.read();
            let roles = s.list_roles(ctx.optional("PathPrefix"));
            let page = paginate(ctx, &roles)?;
            x.members("Roles", page.items, |x, r| role_xml(x, &s, r));
            x.page_end(&page);
        }
        DeleteRole => {
            iam.mutate(|s| s.delete_role(ctx.required("RoleName").map_err(api_to_iam)?))?
        }
        UpdateRole => {
            let max = ctx.integer("MaxSessionDuration")?;
            iam.mutate(|s| {
                s.update_role(
                    ctx.required("RoleName").map_err(api_to_iam)?,
                    ctx.optional("Description"),
                    max,
                )
            })?
        }
        UpdateAssumeRolePolicy => iam.mutate(|s| {
            s.update_assume_role_policy(
                ctx.required("RoleName").map_err(api_to_iam)?,
                ctx.required("PolicyDocument").map_err(api_to_iam)?,
            )
        })?,
        TagRole => {
            let tags = ctx.tags();
            iam.mutate(|s| s.tag_role(ctx.required("RoleName").map_err(api_to_iam)?, tags))?
        }
        UntagRole => {
            let keys = ctx.list("TagKeys");
            iam.mutate(|s| s.untag_role(ctx.required("RoleName").map_err(api_to_iam)?, &keys))?
        }
        ListRoleTags => {
            let s = iam.read();
            let r = s.role(ctx.required("RoleName")?)?;
            x.tags(&r.tags).text("IsTruncated", "false");
        }
        CreateAccessKey => {
            let name = user_name(ctx)?;
            let key = iam.mutate(|s| s.create_access_key(&name, now, rng))?;
            x.open("AccessKey")
                .text("UserName", &key.user)
                .text("AccessKeyId", &key.id)
                .text("Status", key.status.as_str())
                .text("SecretAccessKey", &key.secret)
                .date("CreateDate", key.created)
                .close("AccessKey");
        }
        ListAccessKeys => {
            let name = user_name(ctx)?;
            let s = iam.read();
            let keys = s.list_access_keys(&name)?;
            let page = paginate(ctx, &keys)?;
            x.members("AccessKeyMetadata", page.items, |x, k| {
                x.text("UserName", &k.user)
                    .text("AccessKeyId", &k.id)
                    .text("Status", k.status.as_str())
                    .date("CreateDate", k.created);
            });
            x.page_end(&page);
        }
        UpdateAccessKey => {
            let name = user_name(ctx)?;
            let status = KeyStatus::parse(ctx.required("Status")?)?;
            let id = ctx.required("AccessKeyId")?;
            iam.mutate(|s| s.update_access_key(&name, id, status))?
        }
        DeleteAccessKey => {
            let name = user_name(ctx)?;
            let id = ctx.required("AccessKeyId")?;
            iam.mutate(|s| s.delete_access_key(&name, id))?
        }
        CreatePolicy => {
            let tags = ctx.tags();
            iam.mutate(|s| {
                let p = s
                    .create_policy(
                        ctx.required("PolicyName").map_err(api_to_iam)?,
                        ctx.optional("Path"),
                        ctx.required("PolicyDocument").map_err(api_to_iam)?,
                        ctx.optional("Description"),
                        tags,
                        now,
                        rng,
                    )?
                    .clone();
                x.open("Policy");
                policy_xml(&mut x, s, &p);
                x.close("Policy");
                Ok(())
            })?;
        }
        GetPolicy => {
            let s = iam.read();
            let p = s.managed(ctx.required("PolicyArn")?)?;
            x.open("Policy");
            policy_xml(&mut x, &s, p);
            x.close("Policy");
        }
        GetPolicyVersion => {
            let s = iam.read();
            let (p, v) =
                s.policy_version(ctx.required("PolicyArn")?, ctx.required("VersionId")?)?;
            x.open("PolicyVersion")
                .text("Document", &url_encode(&v.document.text))
                .text("VersionId", &v.id)
                .text("IsDefaultVersion", bool_text(p.default_version == v.id))
                .date("CreateDate", v.created)
                .close("PolicyVersion");
        }
        CreatePolicyVersion => {
            let set_default = ctx.boolean("SetAsDefault");
            iam.mutate(|s| {
                let arn = ctx.required("PolicyArn").map_err(api_to_iam)?;
                let doc = ctx.required("PolicyDocument").map_err(api_to_iam)?;
                let v = s.create_policy_version(arn, doc, set_default, now)?.clone();
                x.open("PolicyVersion")
                    .text("VersionId", &v.id)
                    .text("IsDefaultVersion", bool_text(set_default))
                    .date("CreateDate", v.created)
                    .close("PolicyVersion");
                Ok(())
            })?;
        }
        ListPolicyVersions => {
            let s = iam.read();
            let p = s.managed(ctx.required("PolicyArn")?)?;
            let versions: Vec<_> = p.versions.iter().rev().collect();
            let page = paginate(ctx, &versions)?;
            x.members("Versions", page.items, |x, v| {
                x.text("VersionId", &v.id)
                    .text("IsDefaultVersion", bool_text(p.default_version == v.id))
                    .date("CreateDate", v.created);
            });
            x.page_end(&page);
        }
        DeletePolicyVersion => iam.mutate(|s| {
            s.delete_policy_version(
                ctx.required("PolicyArn").map_err(api_to_iam)?,
                ctx.required("VersionId").map_err(api_to_iam)?,
            )
        })?,
        SetDefaultPolicyVersion => iam.mutate(|s| {
            s.set_default_policy_version(
                ctx.required("PolicyArn").map_err(api_to_iam)?,
                ctx.required("VersionId").map_err(api_to_iam)?,
                now,
            )
        })?,
        ListPolicies => {
            let s = iam.read();
            let scope = ctx.optional("Scope").unwrap_or("All");
            let only_attached = ctx.boolean("OnlyAttached");
            let prefix = ctx.optional("PathPrefix").unwrap_or("/");
            let policies: Vec<&ManagedPolicy> = if scope == "AWS" {
                Vec::new()
            } else {
                s.policies
                    .values()
                    .filter(|p| p.path.starts_with(prefix))
                    .filter(|p| !only_attached || s.attachment_count(&p.arn) > 0)
                    .collect()
            };
            let page = paginate(ctx, &policies)?;
            x.members("Policies", page.items, |x, p| policy_xml(x, &s, p));
            x.page_end(&page);
        }
        DeletePolicy => {
            iam.mutate(|s| s.delete_policy(ctx.required("PolicyArn").map_err(api_to_iam)?))?
        }
        AttachUserPolicy | AttachGroupPolicy | AttachRolePolicy => {
            let t = target(op, ctx)?;
            let arn = ctx.required("PolicyArn")?;
            iam.mutate(|s| s.attach_policy(t, arn))?
        }
        DetachUserPolicy | DetachGroupPolicy | DetachRolePolicy => {
            let t = target(op, ctx)?;
            let arn = ctx.required("PolicyArn")?;
            iam.mutate(|s| s.detach_policy(t, arn))?
        }
        ListAttachedUserPolicies | ListAttachedGroupPolicies | ListAttachedRolePolicies => {
            let s = iam.read();
            let attached = s.attached(target(op, ctx)?)?;
            let page = paginate(ctx, attached)?;
            x.members("AttachedPolicies", page.items, |x, arn| {
                let name = s
                    .policies
                    .get(arn)
                    .map(|p| p.name.as_str())
                    .unwrap_or_default();
                x.text("PolicyName", name).text("PolicyArn", arn);
            });
            x.page_end(&page);
        }
        PutUserPolicy | PutGroupPolicy | PutRolePolicy => {
            let t = target(op, ctx)?;
            let name = ctx.required("PolicyName")?;
            let doc = ctx.required("PolicyDocument")?;
            iam.mutate(|s| s.put_inline_policy(t, name, doc))?
        }
        GetUserPolicy | GetGroupPolicy | GetRolePolicy => {
            let t = target(op, ctx)?;
            let name = ctx.required("PolicyName")?;
            let s = iam.read();
            let doc = s.inline_policy(t, name)?;
            let (field, entity) = match t {
                Target::User(n) => ("UserName", n),
                Target::Group(n) => ("GroupName", n),
                Target::Role(n) => ("RoleName", n),
            };
            x.text(field, entity)
                .text("PolicyName", name)
                .text("PolicyDocument", &url_encode(&doc.text));
        }
        ListUserPolicies | ListGroupPolicies | ListRolePolicies => {
            let s = iam.read();
            let names: Vec<String> = s.inline(target(op, ctx)?)?.keys().cloned().collect();
            let page = paginate(ctx, &names)?;
            x.strings("PolicyNames", page.items);
            x.page_end(&page);
        }
        DeleteUserPolicy | DeleteGroupPolicy | DeleteRolePolicy => {
            let t = target(op, ctx)?;
            let name = ctx.required("PolicyName")?;
            iam.mutate(|s| s.delete_inline_policy(t, name))?
        }
        PutUserPermissionsBoundary | PutRolePermissionsBoundary => {
            let t = target(op, ctx)?;
            let arn = ctx.required("PermissionsBoundary")?;
            iam.mutate(|s| s.put_boundary(t, arn))?
        }
        DeleteUserPermissionsBoundary | DeleteRolePermissionsBoundary => {
            let t = target(op, ctx)?;
            iam.mutate(|s| s.delete_boundary(t))?
        }
        CreateOpenIDConnectProvider => {
            let tags = ctx.tags();
            let client_ids = ctx.list("ClientIDList");
            let thumbprints = ctx.list("ThumbprintList");
            let url = ctx.required("Url")?;
            let arn = iam.mutate(|s| {
                s.create_oidc_provider(url, client_ids, thumbprints, tags, now)
                    .map(|p| p.arn.clone())
            })?;
            x.text("OpenIDConnectProviderArn", &arn);
        }
        GetOpenIDConnectProvider => {
            let s = iam.read();
            provider_xml(
                &mut x,
                s.oidc_provider(ctx.required("OpenIDConnectProviderArn")?)?,
            );
        }
        ListOpenIDConnectProviders => {
            let s = iam.read();
            x.members(
                "OpenIDConnectProviderList",
                s.oidc_providers.values(),
                |x, p| {
                    x.text("Arn", &p.arn);
                },
            );
        }
        DeleteOpenIDConnectProvider => {
            let arn = ctx.required("OpenIDConnectProviderArn")?;
            iam.mutate(|s| s.delete_oidc_provider(arn))?
        }
        AddClientIDToOpenIDConnectProvider => {
            let arn = ctx.required("OpenIDConnectProviderArn")?;
            let id = ctx.required("ClientID")?;
            iam.mutate(|s| s.add_client_id(arn, id))?
        }
        RemoveClientIDFromOpenIDConnectProvider => {
            let arn = ctx.required("OpenIDConnectProviderArn")?;
            let id = ctx.required("ClientID")?;
            iam.mutate(|s| s.remove_client_id(arn, id))?
        }
        UpdateOpenIDConnectProviderThumbprint => {
            let arn = ctx.required("OpenIDConnectProviderArn")?;
            let thumbprints = ctx.list("ThumbprintList");
            iam.mutate(|s| s.update_thumbprints(arn, thumbprints))?
        }
        SimulatePrincipalPolicy | SimulateCustomPolicy => simulate(op, ctx, &mut x)?,
        _ => {
            return Err(
                IamError::new(IamErrorKind::ValidationError, "not an IAM operation").into(),
            );
        }
    }
    Ok(x.finish())
}

fn bool_text(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// Lets a handler use `?` on a parameter inside an IAM state change.
fn api_to_iam(e: ApiError) -> IamError {
    IamError::validation(e.message)
}

fn parse_inputs(ctx: &Ctx<'_>, name: &str, kind: PolicyKind) -> Result<Vec<Arc<Policy>>, ApiError> {
    ctx.list(name)
        .iter()
        .map(|doc| {
            Policy::parse(doc, kind).map(Arc::new).map_err(|e| {
                IamError::new(IamErrorKind::MalformedPolicyDocument, e.to_string()).into()
            })
        })
        .collect()
}

/// `SimulatePrincipalPolicy` and `SimulateCustomPolicy`: every action on every
/// resource, with the context entries given, through the same evaluator.
fn simulate(op: Operation, ctx: &Ctx<'_>, x: &mut Xml) -> Result<(), ApiError> {
    let actions = ctx.list("ActionNames");
    if actions.is_empty() {
        return Err(IamError::validation(
            "1 validation error detected: Value null at 'actionNames' failed to satisfy constraint: Member must not be null",
        )
        .into());
    }
    let mut resources = ctx.list("ResourceArns");
    if resources.is_empty() {
        resources.push("*".to_owned());
    }
    let extra = parse_inputs(ctx, "PolicyInputList", PolicyKind::Identity)?;
    let boundaries = parse_inputs(
        ctx,
        "PermissionsBoundaryPolicyInputList",
        PolicyKind::Identity,
    )?;
    if op == Operation::SimulateCustomPolicy && extra.is_empty() {
        return Err(IamError::validation(
            "1 validation error detected: Value null at 'policyInputList' failed to satisfy constraint: Member must not be null",
        )
        .into());
    }
    let caller = match op {
        Operation::SimulatePrincipalPolicy => {
            Some(simulated_caller(ctx, ctx.required("PolicySourceArn")?)?)
        }
        _ => None,
    };
    let mut keys = ctx.keys.layer();
    for entry in ctx.structs("ContextEntries") {
        let name = entry
            .iter()
            .find(|(k, _)| k == "ContextKeyName")
            .map(|(_, v)| v.clone());
        let values: Vec<String> = {
            let mut vs: Vec<(u32, String)> = entry
                .iter()
                .filter_map(|(k, v)| {
                    let n = k.strip_prefix("ContextKeyValues.member.")?.parse().ok()?;
                    Some((n, v.clone()))
                })
                .collect();
            vs.sort_by_key(|(n, _)| *n);
            vs.into_iter().map(|(_, v)| v).collect()
        };
        if let Some(name) = name {
            keys.set_multi(&name, values);
        }
    }
    let mut results = Vec::new();
    for action in &actions {
        for resource in &resources {
            let evaluation = ctx.iam.simulate(
                caller.as_ref(),
                &extra,
                &boundaries,
                action,
                resource,
                keys.clone(),
            );
            results.push((action.clone(), resource.clone(), evaluation));
        }
    }
    x.members("EvaluationResults", &results, |x, (action, resource, e)| {
        let decision = match e.decision {
            Decision::Allow => "allowed",
            Decision::ExplicitDeny => "explicitDeny",
            Decision::ImplicitDeny => "implicitDeny",
        };
        x.text("EvalActionName", action)
            .text("EvalResourceName", resource)
            .text("EvalDecision", decision);
        x.open("MatchedStatements");
        if let Some(s) = &e.deciding {
            x.open("member")
                .text("SourcePolicyId", &s.source)
                .text("SourcePolicyType", "IAM Policy")
                .close("member");
        }
        x.close("MatchedStatements");
        x.open("MissingContextValues").close("MissingContextValues");
    });
    x.text("IsTruncated", "false");
    Ok(())
}

/// The principal `SimulatePrincipalPolicy` names (a user, group or role ARN).
fn simulated_caller(ctx: &Ctx<'_>, arn: &str) -> Result<Caller, ApiError> {
    let s = ctx.iam.read();
    let account = ctx.iam.account().clone();
    let not_found = || {
        ApiError::from(IamError::new(
            IamErrorKind::NoSuchEntity,
            format!("Entity {arn} does not exist."),
        ))
    };
    let rest = arn
        .strip_prefix(&format!("arn:aws:iam::{account}:"))
        .ok_or_else(not_found)?;
    let name = rest.rsplit('/').next().unwrap_or(rest);
    let principal = if rest.starts_with("user/") {
        let u = s.user(name).map_err(|_| not_found())?;
        Principal::User {
            account,
            name: u.name.clone(),
            id: u.id.clone(),
            path: u.path.clone(),
        }
    } else if rest.starts_with("role/") {
        let r = s.role(name).map_err(|_| not_found())?;
        Principal::AssumedRole {
            account,
            role_name: r.name.clone(),
            role_id: r.id.clone(),
            role_path: r.path.clone(),
            session_name: "simulation".to_owned(),
        }
    } else {
        return Err(not_found());
    };
    Ok(Caller::long_term(principal))
}
