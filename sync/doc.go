// Package imapsync (folder sync) mirrors the chosen IMAP folders of every
// connected mailbox into the database: initial and incremental sync, IDLE,
// and the leases that let several instances share the work. It is named
// imapsync so that no importer has to alias around the standard library's
// sync. It imports mailbox.
//
// Invariants (as they land with the IMAP sync issue):
//   - A folder's sync state (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ) advances in
//     the same transaction as the rows it covers.
//   - (folder, uidvalidity, uid) is unique in the database.
//   - One worker holds a mailbox at a time, through a lease row.
package imapsync
