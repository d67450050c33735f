// Package imapsync (folder sync) mirrors the chosen IMAP folders of every
// connected mailbox into the database: initial and incremental sync, IDLE,
// and the leases that let several instances share the work. It is named
// imapsync so that no importer has to alias around the standard library's
// sync. It imports mailbox (models, settings, the dialer) and store.
//
// # Shape
//
// New builds an Engine; Run is its worker loop (serve runs it with the other
// workers). Every LeaseTTL/3 the loop heartbeats the instance
// (sync_instances), renews its leases (sync_leases), stops the workers of
// leases it lost, gives back what exceeds its share — the eligible
// mailboxes divided by the live instances, within MaxMailboxesPerInstance —
// and takes free mailboxes up to it. Each held mailbox has one worker
// goroutine that owns its one IMAP connection: a full pass over the selected
// folders (INBOX last), then IDLE on INBOX; an EXISTS, EXPUNGE or FETCH from
// the server (the unilateral data handler) wakes a pass of INBOX, the poll
// timer (PollInterval) or a request (SyncNow, a mailbox change) a full
// pass. IDLE is ended and started again every IdleRestart (25 min, under
// RFC 2177's 29). A failure reconnects with exponential backoff and jitter;
// a refused login marks the mailbox auth_failed and ends its worker until
// the settings change (mailbox.Service.Update clears the flag and calls
// OnChange).
//
// # One folder sync (syncFolder)
//
// EXAMINE with CONDSTORE (RFC 7162) gives UIDVALIDITY, UIDNEXT, EXISTS and
// HIGHESTMODSEQ. A new UIDVALIDITY deletes the folder's rows (RFC 3501
// 2.3.1.1). When UIDNEXT, EXISTS and HIGHESTMODSEQ equal the values stored at
// the end of the last complete run, nothing changed: nothing is fetched or
// written. Otherwise UID SEARCH ALL (ESEARCH when offered) is diffed with
// the stored UIDs — go-imap v2 beta cannot parse VANISHED, so expunges are
// found this way — flags come from FETCH (FLAGS) (CHANGEDSINCE modseq), or a
// sweep in chunks without CONDSTORE, and only rows whose flags differ are
// written; missing messages are fetched newest first in UID FETCH batches.
//
// Bodies are never buffered without a bound: each literal is read whole up
// to its announced size only when it is at most MaxMessageBytes (larger ones
// are parsed as they stream and stored without their bytes, raw_omitted),
// and the bytes in flight between the connection and the parse/compress
// workers are capped (32 MiB). go-imap's Collect is never used for bodies,
// and no other IMAP command is sent inside a FETCH loop (only database
// work happens there).
//
// # Storage
//
// The raw RFC 822 message is stored gzip-compressed (level 1) in the
// messages.raw column: BYTEA on PostgreSQL, BLOB on SQLite. A blob store was
// not needed: one message is at most MaxMessageBytes (64 MiB by default),
// rows are written in batches, and keeping the bytes in the same
// transaction as the row keeps the crash-safety argument simple. The API
// serves the raw message by decompressing it as it streams.
//
// # Invariants
//
//   - (folder, uidvalidity, uid) is unique in the database
//     (messages_folder_uid), and inserts are ON CONFLICT DO NOTHING.
//   - A folder's sync state (UIDNEXT, HIGHESTMODSEQ) advances only in the
//     transaction that commits the last rows of a run in which no message
//     failed, so a restart redoes at most the uncommitted batch (BatchSize
//     rows plus what was in flight); progress (total, synced) is committed
//     with every batch.
//   - A sync of an unchanged folder fetches no body and writes no message
//     or folder row (Engine.Stats counts both; the mailbox's status row
//     records the time of the check).
//   - One worker holds a mailbox at a time: a lease row renewed every
//     LeaseTTL/3; a worker whose lease cannot be renewed stops before it
//     could run out, and an instance that dies loses its mailboxes once
//     their leases expire. Instances' clocks must agree within a fraction
//     of LeaseTTL.
//   - Every IMAP command runs under a deadline (CommandTimeout without
//     progress) that closes the connection: go-imap v2 has no context and
//     no read timeout between responses; TCP keep-alive is on (netguard).
//   - A message that fails to parse MaxParseFailures times is quarantined
//     (sync_quarantine): logged, counted, and skipped afterwards.
package imapsync
