//! IAM's entities and the operations on them, as one serialisable state.
//!
//! Every method checks its input as IAM does and either changes the state
//! completely or not at all. Time and randomness come from the caller.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use moat_policy::{Policy, PolicyKind};
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use crate::credentials::random_text;
use crate::error::{IamError, IamErrorKind};
use crate::AccountId;

/// Limits IAM enforces.
pub const MAX_ACCESS_KEYS_PER_USER: usize = 2;
pub const MAX_POLICY_VERSIONS: usize = 5;
pub const MAX_MANAGED_POLICY_CHARS: usize = 6144;
pub const MAX_USER_INLINE_CHARS: usize = 2048;
pub const MAX_ROLE_INLINE_CHARS: usize = 10240;
pub const MAX_GROUP_INLINE_CHARS: usize = 5120;
pub const MAX_ATTACHED_POLICIES: usize = 10;
pub const MAX_TAGS: usize = 50;

/// A key/value tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

/// A parsed policy kept beside its text. Parsing happens once, when the
/// document is stored or loaded.
#[derive(Clone, Serialize, Deserialize)]
pub struct Document {
    pub text: String,
    #[serde(skip)]
    parsed: Option<Arc<Policy>>,
}

impl fmt::Debug for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Document")
            .field("text", &self.text)
            .finish()
    }
}

impl Document {
    pub(crate) fn parse(
        text: &str,
        kind: PolicyKind,
        max_chars: usize,
    ) -> Result<Document, IamError> {
        let meaningful = text.chars().filter(|c| !c.is_whitespace()).count();
        if meaningful > max_chars {
            return Err(IamError::new(
                IamErrorKind::LimitExceeded,
                format!("Cannot exceed quota for PolicySize: {max_chars}"),
            ));
        }
        if text.is_empty() {
            return Err(IamError::validation(
                "1 validation error detected: Value at 'policyDocument' failed to satisfy constraint: Member must have length greater than or equal to 1",
            ));
        }
        let policy = Policy::parse(text, kind)
            .map_err(|e| IamError::new(IamErrorKind::MalformedPolicyDocument, e.to_string()))?;
        Ok(Document {
            text: text.to_owned(),
            parsed: Some(Arc::new(policy)),
        })
    }

    /// The parsed policy. Stored documents were valid when stored.
    pub fn policy(&self) -> Option<&Arc<Policy>> {
        self.parsed.as_ref()
    }

    fn rehydrate(&mut self, kind: PolicyKind) {
        self.parsed = Policy::parse(&self.text, kind).ok().map(Arc::new);
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub id: String,
    pub path: String,
    pub created: i64,
    pub tags: Vec<Tag>,
    pub inline: BTreeMap<String, Document>,
    pub attached: Vec<String>,
    pub boundary: Option<String>,
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    pub id: String,
    pub path: String,
    pub created: i64,
    pub inline: BTreeMap<String, Document>,
    pub attached: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Role {
    pub name: String,
    pub id: String,
    pub path: String,
    pub created: i64,
    pub trust: Document,
    pub description: Option<String>,
    pub max_session_duration: i64,
    pub tags: Vec<Tag>,
    pub inline: BTreeMap<String, Document>,
    pub attached: Vec<String>,
    pub boundary: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyVersion {
    pub id: String,
    pub document: Document,
    pub created: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManagedPolicy {
    pub name: String,
    pub id: String,
    pub arn: String,
    pub path: String,
    pub description: Option<String>,
    pub created: i64,
    pub updated: i64,
    pub default_version: String,
    pub versions: Vec<PolicyVersion>,
    /// The next version number to hand out (IAM never reuses one).
    pub next_version: u32,
    pub tags: Vec<Tag>,
}

impl ManagedPolicy {
    pub fn default_document(&self) -> Option<&Document> {
        self.versions
            .iter()
            .find(|v| v.id == self.default_version)
            .map(|v| &v.document)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyStatus {
    Active,
    Inactive,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "Active",
            KeyStatus::Inactive => "Inactive",
        }
    }
    pub fn parse(text: &str) -> Result<KeyStatus, IamError> {
        match text {
            "Active" => Ok(KeyStatus::Active),
            "Inactive" => Ok(KeyStatus::Inactive),
            other => Err(IamError::validation(format!(
                "1 validation error detected: Value '{other}' at 'status' failed to satisfy constraint: Member must satisfy enum value set: [Active, Inactive]"
            ))),
        }
    }
}

/// A user's long-term access key. The secret is never shown again after creation.
#[derive(Clone, Serialize, Deserialize)]
pub struct UserKey {
    pub id: String,
    pub user: String,
    pub secret: String,
    pub status: KeyStatus,
    pub created: i64,
}

impl fmt::Debug for UserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserKey")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OidcProvider {
    pub arn: String,
    /// The issuer URL as registered (`https://host/path`).
    pub url: String,
    pub client_ids: Vec<String>,
    pub thumbprints: Vec<String>,
    pub created: i64,
    pub tags: Vec<Tag>,
}

impl OidcProvider {
    /// `host/path` without the scheme: the prefix of its condition keys.
    pub fn key_prefix(&self) -> &str {
        self.url
            .trim_start_matches("https://")
            .trim_end_matches('/')
    }
}

/// Which entity a policy operation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    User(&'a str),
    Group(&'a str),
    Role(&'a str),
}

/// All of IAM's state for one account. Serialised whole by the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IamState {
    pub version: u32,
    pub account: String,
    /// Keyed by lower-cased name: IAM names are unique regardless of case.
    pub users: BTreeMap<String, User>,
    pub groups: BTreeMap<String, Group>,
    pub roles: BTreeMap<String, Role>,
    /// Keyed by ARN.
    pub policies: BTreeMap<String, ManagedPolicy>,
    /// Keyed by access key id.
    pub keys: BTreeMap<String, UserKey>,
    /// Keyed by ARN.
    pub oidc_providers: BTreeMap<String, OidcProvider>,
    /// Temporary credentials, keyed by access key id.
    pub sessions: BTreeMap<String, crate::sessions::Session>,
}

fn validate_name(what: &str, name: &str, max: usize) -> Result<(), IamError> {
    let ok = !name.is_empty()
        && name.chars().count() <= max
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(IamError::validation(format!(
            "1 validation error detected: Value '{name}' at '{what}' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]+ and have length between 1 and {max}"
        )))
    }
}

fn validate_path(path: &str) -> Result<(), IamError> {
    let ok = path.starts_with('/')
        && path.ends_with('/')
        && path.len() <= 512
        && path.chars().all(|c| ('\u{21}'..='\u{7e}').contains(&c));
    if ok {
        Ok(())
    } else {
        Err(IamError::validation(format!(
            "The specified value for path ({path}) is invalid. It must begin and end with / and contain only printable ASCII characters."
        )))
    }
}

fn validate_tags(tags: &[Tag]) -> Result<(), IamError> {
    if tags.len() > MAX_TAGS {
        return Err(IamError::new(
            IamErrorKind::LimitExceeded,
            format!("The number of tags has reached the maximum limit of {MAX_TAGS}."),
        ));
    }
    for t in tags {
        if t.key.is_empty() || t.key.chars().count() > 128 || t.value.chars().count() > 256 {
            return Err(IamError::validation(
                "Tag keys must be 1 to 128 characters and values at most 256 characters.",
            ));
        }
        if t.key.to_ascii_lowercase().starts_with("aws:") {
            return Err(IamError::new(
                IamErrorKind::InvalidInput,
                "User-defined tag keys cannot begin with the reserved prefix aws:.",
            ));
        }
    }
    Ok(())
}

fn merge_tags(existing: &mut Vec<Tag>, new: Vec<Tag>) -> Result<(), IamError> {
    validate_tags(&new)?;
    let mut merged = existing.clone();
    for t in new {
        match merged
            .iter_mut()
            .find(|e| e.key.eq_ignore_ascii_case(&t.key))
        {
            Some(e) => e.value = t.value,
            None => merged.push(t),
        }
    }
    validate_tags(&merged)?;
    *existing = merged;
    Ok(())
}

/// A new unique id of AWS's shape, e.g. `AIDA` and 17 upper-case characters.
pub fn new_id(prefix: &str, rng: &dyn SecureRandom) -> Result<String, IamError> {
    random_text(rng, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 17)
        .map(|t| format!("{prefix}{t}"))
        .map_err(|_| IamError::new(IamErrorKind::ValidationError, "the random source failed"))
}

impl IamState {
    pub fn new(account: &AccountId) -> IamState {
        IamState {
            version: 1,
            account: account.to_string(),
            users: BTreeMap::new(),
            groups: BTreeMap::new(),
            roles: BTreeMap::new(),
            policies: BTreeMap::new(),
            keys: BTreeMap::new(),
            oidc_providers: BTreeMap::new(),
            sessions: BTreeMap::new(),
        }
    }

    /// Re-parses every stored document after loading.
    pub fn rehydrate(&mut self) {
        for u in self.users.values_mut() {
            u.inline
                .values_mut()
                .for_each(|d| d.rehydrate(PolicyKind::Identity));
        }
        for g in self.groups.values_mut() {
            g.inline
                .values_mut()
                .for_each(|d| d.rehydrate(PolicyKind::Identity));
        }
        for r in self.roles.values_mut() {
            r.trust.rehydrate(PolicyKind::Trust);
            r.inline
                .values_mut()
                .for_each(|d| d.rehydrate(PolicyKind::Identity));
        }
        for p in self.policies.values_mut() {
            for v in &mut p.versions {
                v.document.rehydrate(PolicyKind::Identity);
            }
        }
        for s in self.sessions.values_mut() {
            s.rehydrate();
        }
    }

    pub fn user_arn(&self, user: &User) -> String {
        format!(
            "arn:aws:iam::{}:user{}{}",
            self.account, user.path, user.name
        )
    }
    pub fn group_arn(&self, group: &Group) -> String {
        format!(
            "arn:aws:iam::{}:group{}{}",
            self.account, group.path, group.name
        )
    }
    pub fn role_arn(&self, role: &Role) -> String {
        format!(
            "arn:aws:iam::{}:role{}{}",
            self.account, role.path, role.name
        )
    }

    // ----- users -----

    pub fn create_user(
        &mut self,
        name: &str,
        path: Option<&str>,
        tags: Vec<Tag>,
        boundary: Option<&str>,
        now: i64,
        rng: &dyn SecureRandom,
    ) -> Result<&User, IamError> {
        validate_name("userName", name, 64)?;
        let path = path.unwrap_or("/");
        validate_path(path)?;
        validate_tags(&tags)?;
        let key = name.to_ascii_lowercase();
        if self.users.contains_key(&key) {
            return Err(IamError::exists("User", name));
        }
        if let Some(b) = boundary {
            self.managed(b)?;
        }
        let user = User {
            name: name.to_owned(),
            id: new_id("AIDA", rng)?,
            path: path.to_owned(),
            created: now,
            tags,
            inline: BTreeMap::new(),
            attached: Vec::new(),
            boundary: boundary.map(str::to_owned),
            groups: Vec::new(),
        };
        Ok(self.users.entry(key).or_insert(user))
    }

    pub fn user(&self, name: &str) -> Result<&User, IamError> {
        self.users
            .get(&name.to_ascii_lowercase())
            .ok_or_else(|| IamError::no_such("user", name))
    }

    fn user_mut(&mut self, name: &str) -> Result<&mut User, IamError> {
        self.users
            .get_mut(&name.to_ascii_lowercase())
            .ok_or_else(|| IamError::no_such("user", name))
    }

    pub fn list_users(&self, path_prefix: Option<&str>) -> Vec<&User> {
        let prefix = path_prefix.unwrap_or("/");
        self.users
            .values()
            .filter(|u| u.path.starts_with(prefix))
            .collect()
    }

    pub fn delete_user(&mut self, name: &str) -> Result<(), IamError> {
        let user = self.user(name)?;
        let conflict = |what: &str| {
            Err(IamError::new(
                IamErrorKind::DeleteConflict,
                format!("Cannot delete entity, must {what} first."),
            ))
        };
        if self
            .keys
            .values()
            .any(|k| k.user.eq_ignore_ascii_case(name))
        {
            return conflict("delete access keys");
        }
        if !user.inline.is_empty() {
            return conflict("delete policies");
        }
        if !user.attached.is_empty() {
            return conflict("detach all policies");
        }
        if !user.groups.is_empty() {
            return conflict("remove users from group");
        }
        self.users.remove(&name.to_ascii_lowercase());
        Ok(())
    }

    pub fn tag_user(&mut self, name: &str, tags: Vec<Tag>) -> Result<(), IamError> {
        merge_tags(&mut self.user_mut(name)?.tags, tags)
    }

    pub fn untag_user(&mut self, name: &str, keys: &[String]) -> Result<(), IamError> {
        let user = self.user_mut(name)?;
        user.tags
            .retain(|t| !keys.iter().any(|k| k.eq_ignore_ascii_case(&t.key)));
        Ok(())
    }

    // ----- groups -----

    pub fn create_group(
        &mut self,
        name: &str,
        path: Option<&str>,
        now: i64,
        rng: &dyn SecureRandom,
    ) -> Result<&Group, IamError> {
        validate_name("groupName", name, 128)?;
        let path = path.unwrap_or("/");
        validate_path(path)?;
        let key = name.to_ascii_lowercase();
        if self.groups.contains_key(&key) {
            return Err(IamError::exists("Group", name));
        }
        let group = Group {
            name: name.to_owned(),
            id: new_id("AGPA", rng)?,
            path: path.to_owned(),
            created: now,
            inline: BTreeMap::new(),
            attached: Vec::new(),
        };
        Ok(self.groups.entry(key).or_insert(group))
    }

    pub fn group(&self, name: &str) -> Result<&Group, IamError> {
        self.groups
            .get(&name.to_ascii_lowercase())
            .ok_or_else(|| IamError::no_such("group", name))
    }

    fn group_mut(&mut self, name: &str) -> Result<&mut Group, IamError> {
        self.groups
            .get_mut(&name.to_ascii_lowercase())
            .ok_or_else(|| IamError::no_such("group", name))
    }

    pub fn group_members(&self, name: &str) -> Vec<&User> {
        self.users
            .values()
            .filter(|u| u.groups.iter().any(|g| g.eq_ignore_ascii_case(name)))
            .collect()
    }

    pub fn list_groups(&self, path_prefix: Option<&str>) -> Vec<&Group> {
        let prefix = path_prefix.unwrap_or("/");
        self.groups
            .values()
            .filter(|g| g.path.starts_with(prefix))
            .collect()
    }

    pub fn delete_group(&mut self, name: &str) -> Result<(), IamError> {
        let group = self.group(name)?;
        let conflict = |what: &str| {
            Err(IamError::new(
                IamErrorKind::DeleteConflict,
                format!("Cannot delete entity, must {what} first."),
            ))
        };
        if !self.group_members(name).is_empty() {
            return conflict("remove users from group");
        }
        if !group.inline.is_empty() {
            return conflict("delete policies");
        }
        if !group.attached.is_empty() {
            return conflict("detach all policies");
        }
        self.groups.remove(&name.to_ascii_lowercase());
        Ok(())
    }

    pub fn add_user_to_group(&mut self, group: &str, user: &str) -> Result<(), IamError> {
        let group_name = self.group(group)?.name.clone();
        let user = self.user_mut(user)?;
        if !user
            .groups
            .iter()
            .any(|g| g.eq_ignore_ascii_case(&group_name))
        {
            user.groups.push(group_name);
        }
        Ok(())
    }

    pub fn remove_user_from_group(&mut self, group: &str, user: &str) -> Result<(), IamError> {
        self.group(group)?;
        let u = self.user_mut(user)?;
        let before = u.groups.len();
        u.groups.retain(|g| !g.eq_ignore_ascii_case(group));
        if u.groups.len() == before {
            return Err(IamError::new(
                IamErrorKind::NoSuchEntity,
                format!("The user with name {user} is not a member of the group {group}."),
            ));
        }
        Ok(())
    }

    // ----- roles -----

    #[allow(clippy::too_many_arguments)]
    pub fn create_role(
        &mut self,
        name: &str,
        path: Option<&str>,
        trust_policy: &str,
        description: Option<&str>,
        max_session_duration: Option<i64>,
        tags: Vec<Tag>,
        boundary: Option<&str>,
        now: i64,
        rng: &dyn SecureRandom,
    ) -> Result<&Role, IamError> {
        validate_name("roleName", name, 64)?;
        let path = path.unwrap_or("/");
        validate_path(path)?;
        validate_tags(&tags)?;
        let max = max_session_duration.unwrap_or(3600);
        validate_max_session(max)?;
        let trust = Document::parse(trust_policy, PolicyKind::Trust, 2048)?;
        let key = name.to_ascii_lowercase();
        if self.roles.contains_key(&key) {
            return Err(IamError::exists("Role", name));
        }
        if let Some(b) = boundary {
            self.managed(b)?;
        }
        let role = Role {
            name: name.to_owned(),
            id: new_id("AROA", rng)?,
            path: path.to_owned(),
            created: now,
            trust,
            description: description.map(str::to_owned),
            max_session_duration: max,
            tags,
            inline: BTreeMap::new(),
            attached: Vec::new(),
            boundary: boundary.map(str::to_owned),
        };
        Ok(self.roles.entry(key).or_insert(role))
    }

    pub fn role(&self, name: &str) -> Result<&Role, IamError> {
        self.roles
            .get(&name.to_ascii_lowercase())
            .ok_or_else(|| IamError::no_such("role", name))
    }

    fn role_mut(&mut self, name: &str) -> Result<&mut Role, IamError> {
        self.roles
            .get_mut(&name.to_ascii_lowercase())
            .ok_or_else(|| IamError::no_such("role", name))
    }

    /// The role an ARN names, if it exists in this account.
    pub fn role_by_arn(&self, arn: &str) -> Result<&Role, IamError> {
        let prefix = format!("arn:aws:iam::{}:role/", self.account);
        let rest = arn.strip_prefix(&prefix).ok_or_else(|| {
            IamError::validation(format!(
                "{arn} is not a role ARN of account {}",
                self.account
            ))
        })?;
        let name = rest.rsplit('/').next().unwrap_or(rest);
        let role = self.role(name)?;
        if self.role_arn(role) != arn {
            return Err(IamError::no_such("role", name));
        }
        Ok(role)
    }

    pub fn list_roles(&self, path_prefix: Option<&str>) -> Vec<&Role> {
        let prefix = path_prefix.unwrap_or("/");
        self.roles
            .values()
            .filter(|r| r.path.starts_with(prefix))
            .collect()
    }

    pub fn delete_role(&mut self, name: &str) -> Result<(), IamError> {
        let role = self.role(name)?;
        if !role.inline.is_empty() || !role.attached.is_empty() {
            return Err(IamError::new(
                IamErrorKind::DeleteConflict,
                "Cannot delete entity, must detach all policies first.",
            ));
        }
        self.roles.remove(&name.to_ascii_lowercase());
        Ok(())
    }

    pub fn update_role(
        &mut self,
        name: &str,
        description: Option<&str>,
        max_session_duration: Option<i64>,
    ) -> Result<(), IamError> {
        if let Some(max) = max_session_duration {
            validate_max_session(max)?;
        }
        let role = self.role_mut(name)?;
        if let Some(d) = description {
            role.description = Some(d.to_owned());
        }
        if let Some(max) = max_session_duration {
            role.max_session_duration = max;
        }
        Ok(())
    }

    pub fn update_assume_role_policy(
        &mut self,
        name: &str,
        document: &str,
    ) -> Result<(), IamError> {
        let doc = Document::parse(document, PolicyKind::Trust, 2048)?;
        self.role_mut(name)?.trust = doc;
        Ok(())
    }

    pub fn tag_role(&mut self, name: &str, tags: Vec<Tag>) -> Result<(), IamError> {
        merge_tags(&mut self.role_mut(name)?.tags, tags)
    }

    pub fn untag_role(&mut self, name: &str, keys: &[String]) -> Result<(), IamError> {
        let role = self.role_mut(name)?;
        role.tags
            .retain(|t| !keys.iter().any(|k| k.eq_ignore_ascii_case(&t.key)));
        Ok(())
    }

    // ----- access keys -----

    pub fn create_access_key(
        &mut self,
        user: &str,
        now: i64,
        rng: &dyn SecureRandom,
    ) -> Result<UserKey, IamError> {
        let user_name = self.user(user)?.name.clone();
        let count = self.keys.values().filter(|k| k.user == user_name).count();
        if count >= MAX_ACCESS_KEYS_PER_USER {
            return Err(IamError::new(
                IamErrorKind::LimitExceeded,
                format!("Cannot exceed quota for AccessKeysPerUser: {MAX_ACCESS_KEYS_PER_USER}"),
            ));
        }
        let failed = |_| IamError::validation("the random source failed");
        let key = UserKey {
            id: crate::generate_access_key_id(rng).map_err(failed)?,
            user: user_name,
            secret: crate::generate_secret_access_key(rng)
                .map_err(failed)?
                .expose()
                .to_owned(),
            status: KeyStatus::Active,
            created: now,
        };
        self.keys.insert(key.id.clone(), key.clone());
        Ok(key)
    }

    pub fn list_access_keys(&self, user: &str) -> Result<Vec<&UserKey>, IamError> {
        let name = &self.user(user)?.name;
        Ok(self.keys.values().filter(|k| &k.user == name).collect())
    }

    fn user_key_mut(&mut self, user: &str, key_id: &str) -> Result<&mut UserKey, IamError> {
        let name = self.user(user)?.name.clone();
        match self.keys.get_mut(key_id) {
            Some(k) if k.user == name => Ok(k),
            _ => Err(IamError::new(
                IamErrorKind::NoSuchEntity,
                format!("The Access Key with id {key_id} cannot be found."),
            )),
        }
    }

    pub fn update_access_key(
        &mut self,
        user: &str,
        key_id: &str,
        status: KeyStatus,
    ) -> Result<(), IamError> {
        self.user_key_mut(user, key_id)?.status = status;
        Ok(())
    }

    pub fn delete_access_key(&mut self, user: &str, key_id: &str) -> Result<(), IamError> {
        self.user_key_mut(user, key_id)?;
        self.keys.remove(key_id);
        Ok(())
    }

    // ----- managed policies -----

    pub fn policy_arn(&self, path: &str, name: &str) -> String {
        format!("arn:aws:iam::{}:policy{path}{name}", self.account)
    }

    pub fn managed(&self, arn: &str) -> Result<&ManagedPolicy, IamError> {
        self.policies.get(arn).ok_or_else(|| {
            IamError::new(
                IamErrorKind::NoSuchEntity,
                format!("Policy {arn} does not exist or is not attachable."),
            )
        })
    }

    fn managed_mut(&mut self, arn: &str) -> Result<&mut ManagedPolicy, IamError> {
        self.policies.get_mut(arn).ok_or_else(|| {
            IamError::new(
                IamErrorKind::NoSuchEntity,
                format!("Policy {arn} does not exist or is not attachable."),
            )
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn create_policy(
        &mut self,
        name: &str,
        path: Option<&str>,
        document: &str,
        description: Option<&str>,
        tags: Vec<Tag>,
        now: i64,
        rng: &dyn SecureRandom,
    ) -> Result<&ManagedPolicy, IamError> {
        validate_name("policyName", name, 128)?;
        let path = path.unwrap_or("/");
        validate_path(path)?;
        validate_tags(&tags)?;
        let doc = Document::parse(document, PolicyKind::Identity, MAX_MANAGED_POLICY_CHARS)?;
        let arn = self.policy_arn(path, name);
        if self
            .policies
            .values()
            .any(|p| p.name.eq_ignore_ascii_case(name))
        {
            return Err(IamError::new(
                IamErrorKind::EntityAlreadyExists,
                format!("A policy called {name} already exists. Duplicate names are not allowed."),
            ));
        }
        let policy = ManagedPolicy {
            name: name.to_owned(),
            id: new_id("ANPA", rng)?,
            arn: arn.clone(),
            path: path.to_owned(),
            description: description.map(str::to_owned),
            created: now,
            updated: now,
            default_version: "v1".to_owned(),
            versions: vec![PolicyVersion {
                id: "v1".to_owned(),
                document: doc,
                created: now,
            }],
            next_version: 2,
            tags,
        };
        Ok(self.policies.entry(arn).or_insert(policy))
    }

    pub fn create_policy_version(
        &mut self,
        arn: &str,
        document: &str,
        set_default: bool,
        now: i64,
    ) -> Result<&PolicyVersion, IamError> {
        let doc = Document::parse(document, PolicyKind::Identity, MAX_MANAGED_POLICY_CHARS)?;
        let policy = self.managed_mut(arn)?;
        if policy.versions.len() >= MAX_POLICY_VERSIONS {
            return Err(IamError::new(
                IamErrorKind::LimitExceeded,
                format!(
                    "A managed policy can have up to {MAX_POLICY_VERSIONS} versions. Before you create a new version, you must delete an existing version."
                ),
            ));
        }
        let id = format!("v{}", policy.next_version);
        policy.next_version += 1;
        policy.updated = now;
        if set_default {
            policy.default_version = id.clone();
        }
        policy.versions.push(PolicyVersion {
            id,
            document: doc,
            created: now,
        });
        Ok(policy.versions.last().expect("just pushed"))
    }

    pub fn policy_version(
        &self,
        arn: &str,
        version: &str,
    ) -> Result<(&ManagedPolicy, &PolicyVersion), IamError> {
        let policy = self.managed(arn)?;
        let v = policy
            .versions
            .iter()
            .find(|v| v.id == version)
            .ok_or_else(|| {
                IamError::new(
                    IamErrorKind::NoSuchEntity,
                    format!("Policy {arn} version {version} does not exist or is not attachable."),
                )
            })?;
        Ok((policy, v))
    }

    pub fn set_default_policy_version(
        &mut self,
        arn: &str,
        version: &str,
        now: i64,
    ) -> Result<(), IamError> {
        self.policy_version(arn, version)?;
        let policy = self.managed_mut(arn)?;
        policy.default_version = version.to_owned();
        policy.updated = now;
        Ok(())
    }

    pub fn delete_policy_version(&mut self, arn: &str, version: &str) -> Result<(), IamError> {
        let (policy, _) = self.policy_version(arn, version)?;
        if policy.default_version == version {
            return Err(IamError::new(
                IamErrorKind::DeleteConflict,
                "Cannot delete the default version of a policy.",
            ));
        }
        self.managed_mut(arn)?.versions.retain(|v| v.id != version);
        Ok(())
    }

    /// How many users, groups and roles a managed policy is attached to.
    pub fn attachment_count(&self, arn: &str) -> usize {
        self.users
            .values()
            .filter(|u| u.attached.iter().any(|a| a == arn))
            .count()
            + self
                .groups
                .values()
                .filter(|g| g.attached.iter().any(|a| a == arn))
                .count()
            + self
                .roles
                .values()
                .filter(|r| r.attached.iter().any(|a| a == arn))
                .count()
    }

    /// How many users and roles use a managed policy as their permissions boundary.
    pub fn boundary_count(&self, arn: &str) -> usize {
        self.users
            .values()
            .filter(|u| u.boundary.as_deref() == Some(arn))
            .count()
            + self
                .roles
                .values()
                .filter(|r| r.boundary.as_deref() == Some(arn))
                .count()
    }

    pub fn delete_policy(&mut self, arn: &str) -> Result<(), IamError> {
        let policy = self.managed(arn)?;
        if self.attachment_count(arn) > 0 || self.boundary_count(arn) > 0 {
            return Err(IamError::new(
                IamErrorKind::DeleteConflict,
                "Cannot delete a policy attached to entities.",
            ));
        }
        if policy.versions.len() > 1 {
            return Err(IamError::new(
                IamErrorKind::DeleteConflict,
                "This policy has more than one version. Before you delete a policy, you must delete the policy's versions. The default version is deleted with the policy.",
            ));
        }
        self.policies.remove(arn);
        Ok(())
    }

    // ----- attached and inline policies -----

    fn attached_mut(&mut self, target: Target<'_>) -> Result<&mut Vec<String>, IamError> {
        Ok(match target {
            Target::User(n) => &mut self.user_mut(n)?.attached,
            Target::Group(n) => &mut self.group_mut(n)?.attached,
            Target::Role(n) => &mut self.role_mut(n)?.attached,
        })
    }

    pub fn attached(&self, target: Target<'_>) -> Result<&[String], IamError> {
        Ok(match target {
            Target::User(n) => &self.user(n)?.attached,
            Target::Group(n) => &self.group(n)?.attached,
            Target::Role(n) => &self.role(n)?.attached,
        })
    }

    pub fn attach_policy(&mut self, target: Target<'_>, arn: &str) -> Result<(), IamError> {
        self.managed(arn)?;
        let attached = self.attached_mut(target)?;
        if attached.iter().any(|a| a == arn) {
            return Ok(());
        }
        if attached.len() >= MAX_ATTACHED_POLICIES {
            return Err(IamError::new(
                IamErrorKind::LimitExceeded,
                format!("Cannot exceed quota for PoliciesPerEntity: {MAX_ATTACHED_POLICIES}"),
            ));
        }
        attached.push(arn.to_owned());
        Ok(())
    }

    pub fn detach_policy(&mut self, target: Target<'_>, arn: &str) -> Result<(), IamError> {
        let attached = self.attached_mut(target)?;
        let before = attached.len();
        attached.retain(|a| a != arn);
        if attached.len() == before {
            return Err(IamError::new(
                IamErrorKind::NoSuchEntity,
                format!("Policy {arn} was not found."),
            ));
        }
        Ok(())
    }

    fn inline_mut(
        &mut self,
        target: Target<'_>,
    ) -> Result<(&mut BTreeMap<String, Document>, usize), IamError> {
        Ok(match target {
            Target::User(n) => (&mut self.user_mut(n)?.inline, MAX_USER_INLINE_CHARS),
            Target::Group(n) => (&mut self.group_mut(n)?.inline, MAX_GROUP_INLINE_CHARS),
            Target::Role(n) => (&mut self.role_mut(n)?.inline, MAX_ROLE_INLINE_CHARS),
        })
    }

    pub fn inline(&self, target: Target<'_>) -> Result<&BTreeMap<String, Document>, IamError> {
        Ok(match target {
            Target::User(n) => &self.user(n)?.inline,
            Target::Group(n) => &self.group(n)?.inline,
            Target::Role(n) => &self.role(n)?.inline,
        })
    }

    pub fn put_inline_policy(
        &mut self,
        target: Target<'_>,
        name: &str,
        document: &str,
    ) -> Result<(), IamError> {
        validate_name("policyName", name, 128)?;
        let (inline, limit) = self.inline_mut(target)?;
        let doc = Document::parse(document, PolicyKind::Identity, limit)?;
        // The limit is on all of an entity's inline policies together.
        let others: usize = inline
            .iter()
            .filter(|(k, _)| *k != name)
            .map(|(_, d)| d.text.chars().filter(|c| !c.is_whitespace()).count())
            .sum();
        if others + doc.text.chars().filter(|c| !c.is_whitespace()).count() > limit {
            return Err(IamError::new(
                IamErrorKind::LimitExceeded,
                format!("Maximum policy size of {limit} bytes exceeded for the entity."),
            ));
        }
        inline.insert(name.to_owned(), doc);
        Ok(())
    }

    pub fn inline_policy(&self, target: Target<'_>, name: &str) -> Result<&Document, IamError> {
        self.inline(target)?.get(name).ok_or_else(|| {
            IamError::new(
                IamErrorKind::NoSuchEntity,
                format!("The policy with name {name} cannot be found."),
            )
        })
    }

    pub fn delete_inline_policy(&mut self, target: Target<'_>, name: &str) -> Result<(), IamError> {
        let (inline, _) = self.inline_mut(target)?;
        inline.remove(name).map(|_| ()).ok_or_else(|| {
            IamError::new(
                IamErrorKind::NoSuchEntity,
                format!("The policy with name {name} cannot be found."),
            )
        })
    }

    pub fn put_boundary(&mut self, target: Target<'_>, arn: &str) -> Result<(), IamError> {
        self.managed(arn)?;
        match target {
            Target::User(n) => self.user_mut(n)?.boundary = Some(arn.to_owned()),
            Target::Role(n) => self.role_mut(n)?.boundary = Some(arn.to_owned()),
            Target::Group(_) => {
                return Err(IamError::validation("Groups have no permissions boundary."))
            }
        }
        Ok(())
    }

    pub fn delete_boundary(&mut self, target: Target<'_>) -> Result<(), IamError> {
        match target {
            Target::User(n) => self.user_mut(n)?.boundary = None,
            Target::Role(n) => self.role_mut(n)?.boundary = None,
            Target::Group(_) => {
                return Err(IamError::validation("Groups have no permissions boundary."))
            }
        }
        Ok(())
    }

    // ----- OpenID Connect providers -----

    pub fn create_oidc_provider(
        &mut self,
        url: &str,
        client_ids: Vec<String>,
        thumbprints: Vec<String>,
        tags: Vec<Tag>,
        now: i64,
    ) -> Result<&OidcProvider, IamError> {
        let rest = url.strip_prefix("https://").ok_or_else(|| {
            IamError::validation("The URL of an OpenID Connect provider must begin with https://")
        })?;
        let host_path = rest.trim_end_matches('/');
        if host_path.is_empty() || host_path.contains(['?', '#', ' ']) || url.len() > 255 {
            return Err(IamError::validation(format!(
                "Invalid OpenID Connect provider URL: {url}"
            )));
        }
        for t in &thumbprints {
            if t.len() != 40 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(IamError::validation(
                    "A thumbprint must be 40 hexadecimal characters (a SHA-1 digest).",
                ));
            }
        }
        if client_ids.len() > 100 || client_ids.iter().any(|c| c.is_empty() || c.len() > 255) {
            return Err(IamError::validation(
                "Client ids must be 1 to 255 characters, at most 100.",
            ));
        }
        validate_tags(&tags)?;
        let arn = format!("arn:aws:iam::{}:oidc-provider/{host_path}", self.account);
        if self.oidc_providers.contains_key(&arn) {
            return Err(IamError::new(
                IamErrorKind::EntityAlreadyExists,
                format!("Provider with url {url} already exists."),
            ));
        }
        let provider = OidcProvider {
            arn: arn.clone(),
            url: format!("https://{host_path}"),
            client_ids: dedup(client_ids),
            thumbprints: dedup(thumbprints),
            created: now,
            tags,
        };
        Ok(self.oidc_providers.entry(arn).or_insert(provider))
    }

    pub fn oidc_provider(&self, arn: &str) -> Result<&OidcProvider, IamError> {
        self.oidc_providers.get(arn).ok_or_else(|| {
            IamError::new(
                IamErrorKind::NoSuchEntity,
                format!("OpenIDConnect Provider not found for arn {arn}"),
            )
        })
    }

    fn oidc_provider_mut(&mut self, arn: &str) -> Result<&mut OidcProvider, IamError> {
        self.oidc_providers.get_mut(arn).ok_or_else(|| {
            IamError::new(
                IamErrorKind::NoSuchEntity,
                format!("OpenIDConnect Provider not found for arn {arn}"),
            )
        })
    }

    pub fn delete_oidc_provider(&mut self, arn: &str) -> Result<(), IamError> {
        self.oidc_provider(arn)?;
        self.oidc_providers.remove(arn);
        Ok(())
    }

    pub fn add_client_id(&mut self, arn: &str, client_id: &str) -> Result<(), IamError> {
        if client_id.is_empty() || client_id.len() > 255 {
            return Err(IamError::validation(
                "Client ids must be 1 to 255 characters.",
            ));
        }
        let p = self.oidc_provider_mut(arn)?;
        if !p.client_ids.iter().any(|c| c == client_id) {
            if p.client_ids.len() >= 100 {
                return Err(IamError::new(
                    IamErrorKind::LimitExceeded,
                    "Cannot exceed quota for ClientIdsPerOpenIdConnectProvider: 100",
                ));
            }
            p.client_ids.push(client_id.to_owned());
        }
        Ok(())
    }

    pub fn remove_client_id(&mut self, arn: &str, client_id: &str) -> Result<(), IamError> {
        self.oidc_provider_mut(arn)?
            .client_ids
            .retain(|c| c != client_id);
        Ok(())
    }

    pub fn update_thumbprints(
        &mut self,
        arn: &str,
        thumbprints: Vec<String>,
    ) -> Result<(), IamError> {
        for t in &thumbprints {
            if t.len() != 40 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(IamError::validation(
                    "A thumbprint must be 40 hexadecimal characters (a SHA-1 digest).",
                ));
            }
        }
        self.oidc_provider_mut(arn)?.thumbprints = dedup(thumbprints);
        Ok(())
    }

    /// The provider whose issuer URL is `issuer`.
    pub fn oidc_provider_for_issuer(&self, issuer: &str) -> Option<&OidcProvider> {
        let wanted = issuer.trim_end_matches('/');
        self.oidc_providers.values().find(|p| p.url == wanted)
    }
}

fn validate_max_session(max: i64) -> Result<(), IamError> {
    if (3600..=43200).contains(&max) {
        Ok(())
    } else {
        Err(IamError::validation(format!(
            "1 validation error detected: Value '{max}' at 'maxSessionDuration' failed to satisfy constraint: Member must have value between 3600 and 43200"
        )))
    }
}

fn dedup(items: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}
