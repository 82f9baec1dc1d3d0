//! Refresh-token rotation, as a pure state machine.
//!
//! The rule (see `docs/decisions/0002-refresh-token-rotation.md`):
//!
//! * Refreshing with token `T` mints a child pair (`T'`, access token `A'`)
//!   whose parent is `T`. `T` stays valid: if the client never received the
//!   answer, it can simply refresh again (each retry mints another child).
//! * The first *use* of any child (refreshing with `T'`, or presenting `A'`)
//!   retires the parent `T` together with every other child of `T` and the
//!   access tokens issued alongside them. Exactly one chain survives.
//! * A token is only ever handed out inside the transaction that checked its
//!   parent alive, so two concurrent refreshes of `T` both receive live
//!   pairs; whichever pair is used first wins, the other dies at that moment.
//! * The legacy v1 `/tokenrefresh` is strict single use: the presented token
//!   dies in the same transaction that mints its replacement.
//!
//! Stores execute the [`Effect`]s returned here inside one transaction.

use crate::Timestamp;

/// Store-side identity of a refresh token.
pub type RefreshId = i64;

/// Children a refresh token may have at once, before the first of them is
/// used. A client whose answers were lost retries with the parent and gets
/// a new child each time; sixteen cover any real network and any client
/// that refreshes in parallel. Past this, minting one more retires the
/// oldest (with its access token): otherwise one session could mint
/// children without bound, and the first use of one would then have to
/// retire them all in one write.
pub const MAX_PENDING_CHILDREN: i64 = 16;

/// What the store knows about a presented refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshTokenRow {
    pub id: RefreshId,
    /// The token this one was minted from, while that one is still alive.
    pub parent: Option<RefreshId>,
    pub expires_at: Option<Timestamp>,
}

/// Which endpoint is rotating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /_matrix/client/v3/refresh`.
    Spec,
    /// `POST /_matrix/client/api/v1/tokenrefresh`.
    LegacyV1,
}

/// Why a refresh is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Unknown, retired or already used.
    Dead,
    /// Past its own (optional) lifetime.
    Expired,
    /// The account is locked: no new tokens until it is unlocked (decided
    /// by the server after the store's answer; stores never return it).
    Locked,
}

/// A change the store must make, in order, in the refresh transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Delete `parent`, all its children except `keep`, and every access
    /// token issued with any of them; `keep` becomes a root.
    RetireParent { parent: RefreshId, keep: RefreshId },
    /// Delete this token, its children and their access tokens.
    Retire(RefreshId),
    /// Mint a new refresh + access pair with this parent (`None`: a root).
    Mint { parent: Option<RefreshId> },
}

/// Decides what refreshing with `token` does.
pub fn plan_refresh(
    token: Option<RefreshTokenRow>,
    now: Timestamp,
    endpoint: Endpoint,
) -> Result<Vec<Effect>, Rejection> {
    let token = token.ok_or(Rejection::Dead)?;
    if token.expires_at.is_some_and(|at| at <= now) {
        return Err(Rejection::Expired);
    }
    let mut effects = Vec::with_capacity(3);
    if let Some(parent) = token.parent {
        // Using a child is what retires its parent.
        effects.push(Effect::RetireParent {
            parent,
            keep: token.id,
        });
    }
    match endpoint {
        Endpoint::Spec => effects.push(Effect::Mint {
            parent: Some(token.id),
        }),
        Endpoint::LegacyV1 => {
            effects.push(Effect::Retire(token.id));
            effects.push(Effect::Mint { parent: None });
        }
    }
    Ok(effects)
}

/// The first use of an access token minted by a rotation from `parent`,
/// alongside refresh token `sibling_of_use`, retires that parent.
pub fn on_first_access_token_use(parent: RefreshId, issued_with: RefreshId) -> Effect {
    Effect::RetireParent {
        parent,
        keep: issued_with,
    }
}

#[cfg(test)]
mod tests {
    //! A tiny in-memory executor of the effects, used to check the rule's
    //! promises over random interleavings of refreshes and uses.
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct Model {
        next: RefreshId,
        /// refresh id -> parent
        refresh: BTreeMap<RefreshId, Option<RefreshId>>,
        /// access tokens: (issued with refresh id, pending parent)
        access: BTreeMap<RefreshId, Option<RefreshId>>,
    }

    impl Model {
        fn apply(&mut self, effects: &[Effect]) -> Option<RefreshId> {
            let mut minted = None;
            for e in effects {
                match *e {
                    Effect::RetireParent { parent, keep } => {
                        let doomed: Vec<_> = self
                            .refresh
                            .iter()
                            .filter(|(id, p)| {
                                **id == parent || (**p == Some(parent) && **id != keep)
                            })
                            .map(|(id, _)| *id)
                            .collect();
                        for id in doomed {
                            self.refresh.remove(&id);
                            self.access.remove(&id);
                        }
                        if let Some(p) = self.refresh.get_mut(&keep) {
                            *p = None;
                        }
                        if let Some(p) = self.access.get_mut(&keep) {
                            *p = None;
                        }
                    }
                    Effect::Retire(id) => {
                        let doomed: Vec<_> = self
                            .refresh
                            .iter()
                            .filter(|(i, p)| **i == id || **p == Some(id))
                            .map(|(i, _)| *i)
                            .collect();
                        for i in doomed {
                            self.refresh.remove(&i);
                            self.access.remove(&i);
                        }
                    }
                    Effect::Mint { parent } => {
                        self.next += 1;
                        self.refresh.insert(self.next, parent);
                        self.access.insert(self.next, parent);
                        minted = Some(self.next);
                    }
                }
            }
            minted
        }

        fn refresh(&mut self, id: RefreshId, endpoint: Endpoint) -> Option<RefreshId> {
            let row = self.refresh.get(&id).map(|p| RefreshTokenRow {
                id,
                parent: *p,
                expires_at: None,
            });
            let effects = plan_refresh(row, 0, endpoint).ok()?;
            let minted = self.apply(&effects)?;
            // The promise: what is handed out is alive at hand-out.
            assert!(self.refresh.contains_key(&minted) && self.access.contains_key(&minted));
            Some(minted)
        }

        fn use_access(&mut self, id: RefreshId) -> bool {
            match self.access.get(&id).copied() {
                None => false,
                Some(None) => true,
                Some(Some(parent)) => {
                    self.apply(&[on_first_access_token_use(parent, id)]);
                    true
                }
            }
        }
    }

    #[test]
    fn old_token_survives_until_a_child_is_used() {
        let mut m = Model::default();
        let root = m.apply(&[Effect::Mint { parent: None }]).unwrap();
        let a = m.refresh(root, Endpoint::Spec).unwrap();
        // The answer was lost: the client retries with the old token.
        let b = m.refresh(root, Endpoint::Spec).unwrap();
        assert!(m.refresh.contains_key(&a) && m.refresh.contains_key(&b));
        // The client uses b's access token: root and a die.
        assert!(m.use_access(b));
        assert!(!m.refresh.contains_key(&root));
        assert!(!m.refresh.contains_key(&a));
        assert!(m.refresh(root, Endpoint::Spec).is_none());
        assert!(m.refresh(b, Endpoint::Spec).is_some());
    }

    #[test]
    fn legacy_refresh_is_single_use() {
        let mut m = Model::default();
        let root = m.apply(&[Effect::Mint { parent: None }]).unwrap();
        let next = m.refresh(root, Endpoint::LegacyV1).unwrap();
        assert!(m.refresh(root, Endpoint::LegacyV1).is_none());
        assert!(m.refresh(next, Endpoint::LegacyV1).is_some());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let row = RefreshTokenRow {
            id: 1,
            parent: None,
            expires_at: Some(10),
        };
        assert_eq!(
            plan_refresh(Some(row), 10, Endpoint::Spec),
            Err(Rejection::Expired)
        );
        assert!(plan_refresh(Some(row), 9, Endpoint::Spec).is_ok());
        assert_eq!(plan_refresh(None, 0, Endpoint::Spec), Err(Rejection::Dead));
    }

    proptest! {
        /// Random interleavings: every hand-out is alive (asserted inside
        /// `refresh`), and once a child is used at most one of its
        /// generation survives.
        #[test]
        fn one_chain_survives(ops in prop::collection::vec((0u8..3, 0usize..8), 1..60)) {
            let mut m = Model::default();
            let root = m.apply(&[Effect::Mint { parent: None }]).unwrap();
            let mut known = vec![root];
            for (op, pick) in ops {
                let id = known[pick % known.len()];
                match op {
                    0 => if let Some(n) = m.refresh(id, Endpoint::Spec) { known.push(n) },
                    1 => { m.use_access(id); }
                    _ => if let Some(n) = m.refresh(id, Endpoint::LegacyV1) { known.push(n) },
                }
                // Invariant: at most one root is alive and every live token
                // descends from it (no two independent chains).
                let roots = m.refresh.values().filter(|p| p.is_none()).count();
                prop_assert!(roots <= 1, "{roots} chains alive");
            }
        }
    }
}
