//! How the std API names endpoints and links.
//!
//! One way throughout: an endpoint is an [`EndpointId`] and a link a [`LinkId`], their
//! index in configuration order. Events ([`twinhub_core::Event`]), snapshots
//! ([`Snapshot::endpoints`](super::Snapshot::endpoints) is indexed by it), delivery
//! confirmations and controls all use these ids. Controls also take a configured name as a
//! convenience ([`EndpointRef`], [`LinkRef`]); the handle resolves it to the id before the
//! driver sees it, and [`Producer::endpoint_name`](super::Producer::endpoint_name) and
//! [`Producer::endpoint_id`](super::Producer::endpoint_id) convert either way.

use std::fmt;

use twinhub_core::{EndpointId, LinkId};

/// An endpoint given to a control: its id (as events carry it) or its configured name.
///
/// ```
/// use twinhub::{EndpointId, EndpointRef};
/// assert_eq!(EndpointRef::from("blue"), EndpointRef::Name("blue"));
/// assert_eq!(EndpointRef::from(EndpointId(1)), EndpointRef::Id(EndpointId(1)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointRef<'a> {
    /// By id: the index in configuration order.
    Id(EndpointId),
    /// By configured name.
    Name(&'a str),
}

/// A link given to a control: its id (as events carry it) or its configured name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRef<'a> {
    /// By id: the index in configuration order.
    Id(LinkId),
    /// By configured name.
    Name(&'a str),
}

impl From<EndpointId> for EndpointRef<'_> {
    fn from(id: EndpointId) -> Self {
        EndpointRef::Id(id)
    }
}

impl<'a> From<&'a str> for EndpointRef<'a> {
    fn from(name: &'a str) -> Self {
        EndpointRef::Name(name)
    }
}

impl<'a> From<&'a String> for EndpointRef<'a> {
    fn from(name: &'a String) -> Self {
        EndpointRef::Name(name)
    }
}

impl From<LinkId> for LinkRef<'_> {
    fn from(id: LinkId) -> Self {
        LinkRef::Id(id)
    }
}

impl<'a> From<&'a str> for LinkRef<'a> {
    fn from(name: &'a str) -> Self {
        LinkRef::Name(name)
    }
}

impl<'a> From<&'a String> for LinkRef<'a> {
    fn from(name: &'a String) -> Self {
        LinkRef::Name(name)
    }
}

impl fmt::Display for EndpointRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointRef::Id(id) => write!(f, "with id {}", id.0),
            EndpointRef::Name(name) => write!(f, "named `{name}`"),
        }
    }
}

impl fmt::Display for LinkRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkRef::Id(id) => write!(f, "with id {}", id.0),
            LinkRef::Name(name) => write!(f, "named `{name}`"),
        }
    }
}

/// The index of `name` in `names`, or `id` when it is in range.
fn index(names: &[String], id: Option<u8>, name: Option<&str>) -> Option<u8> {
    let index = match (id, name) {
        (Some(id), _) => usize::from(id),
        (None, Some(name)) => names.iter().position(|n| n == name)?,
        (None, None) => return None,
    };
    u8::try_from(index).ok().filter(|_| index < names.len())
}

impl EndpointRef<'_> {
    /// The id this refers to among the configured endpoint `names`, if any.
    pub(super) fn resolve(self, names: &[String]) -> Option<EndpointId> {
        match self {
            EndpointRef::Id(id) => index(names, Some(id.0), None),
            EndpointRef::Name(name) => index(names, None, Some(name)),
        }
        .map(EndpointId)
    }
}

impl LinkRef<'_> {
    /// The id this refers to among the configured link `names`, if any.
    pub(super) fn resolve(self, names: &[String]) -> Option<LinkId> {
        match self {
            LinkRef::Id(id) => index(names, Some(id.0), None),
            LinkRef::Name(name) => index(names, None, Some(name)),
        }
        .map(LinkId)
    }
}
