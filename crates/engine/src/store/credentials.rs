//! The credential store: the API credential table behind one `Arc`, since it changes rarely and
//! every snapshot shares it until it does.

use std::sync::Arc;

use crate::change::ChangeSet;
use crate::credential::Credential;
use crate::credential::Credentials;
use crate::credential::Scope;
use crate::credential::BOOTSTRAP_ID;
use crate::error::EngineError;
use crate::persist::PersistedState;
use crate::store::context::WriteContext;

/// The API credentials. Cloning is one reference count.
#[derive(Clone, Default)]
pub struct CredentialStore {
    table: Arc<Credentials>,
}

impl CredentialStore {
    /// The credential table.
    pub fn table(&self) -> &Credentials {
        &self.table
    }

    /// `CreateCredential`: adds a credential whose secret the receiving node drew and hashed.
    pub(crate) fn create(
        &mut self,
        id: &str,
        name: &str,
        scopes: &[Scope],
        hash: &str,
        at: &WriteContext<'_>,
    ) -> Result<ChangeSet, EngineError> {
        at.refuse_if_match("credentials")?;
        self.add(Credential {
            id: id.to_string(),
            name: name.to_string(),
            scopes: scopes.to_vec(),
            hash: hash.to_string(),
            created_ms: at.stamped_ms,
            version: at.version,
        })
    }

    /// `RevokeCredential`: removes one credential (never the last admin).
    pub(crate) fn revoke(
        &mut self,
        id: &str,
        at: &WriteContext<'_>,
    ) -> Result<ChangeSet, EngineError> {
        at.refuse_if_match("credentials")?;
        // Checked on a copy first, so a refusal leaves the shared table untouched.
        let mut next = (*self.table).clone();
        next.revoke(id)?;
        self.table = Arc::new(next);
        Ok(credentials_changed(id))
    }

    /// `BootstrapAdmin`: creates the `admin` credential unless a bootstrap happened before (then
    /// nothing changes).
    pub(crate) fn bootstrap(
        &mut self,
        hash: &str,
        at: &WriteContext<'_>,
    ) -> Result<ChangeSet, EngineError> {
        at.refuse_if_match("credentials")?;
        if self.table.bootstrapped() {
            return Ok(ChangeSet::default());
        }
        if self.table.get(BOOTSTRAP_ID).is_some() {
            // Someone created an `admin` credential by hand before any bootstrap.
            Arc::make_mut(&mut self.table).mark_bootstrapped();
            return Ok(credentials_changed(BOOTSTRAP_ID));
        }
        self.add(Credential {
            id: BOOTSTRAP_ID.to_string(),
            name: "bootstrap admin".to_string(),
            scopes: vec![Scope::Admin],
            hash: hash.to_string(),
            created_ms: at.stamped_ms,
            version: at.version,
        })
    }

    /// Writes this store's part of the persisted state.
    pub(crate) fn save(&self, into: &mut PersistedState) {
        into.credentials = self.table.to_persisted();
    }

    /// Rebuilds this store from the persisted state.
    pub(crate) fn load(from: &PersistedState) -> Self {
        Self {
            table: Arc::new(Credentials::from_persisted(&from.credentials)),
        }
    }

    fn add(&mut self, credential: Credential) -> Result<ChangeSet, EngineError> {
        self.table.check_new(&credential)?;
        let changes = credentials_changed(&credential.id);
        Arc::make_mut(&mut self.table).insert(credential);
        Ok(changes)
    }
}

fn credentials_changed(id: &str) -> ChangeSet {
    ChangeSet {
        credentials: vec![id.to_string()],
        ..ChangeSet::default()
    }
}
