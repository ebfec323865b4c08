//! DynamoDB: tables and items on the encrypted store.
//!
//! `value` is DynamoDB's type system (attribute values, exact numbers, item
//! sizes, the order-preserving key encoding); `expr` is its expression
//! language. Both are pure. `tables` keeps tables and their items, one
//! encrypted store per table.
//!
//! Architecture invariant: no HTTP; the edge decodes requests and encodes
//! answers. Depends on `moat-store`, `moat-objects` (where backups go) and
//! `moat-keys`' sealing; the keys themselves come from the caller.

pub mod backups;
pub mod exports;
pub mod expr;
pub mod tables;
pub mod value;
