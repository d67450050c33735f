package store

// migrations lists every schema step in order. Append only: a released
// migration is never edited, a later one changes what it made.
func migrations() []Migration {
	return []Migration{
		{Version: 1, Name: "users, tokens and meta", Statements: []string{
			`CREATE TABLE meta (
				key TEXT PRIMARY KEY,
				value TEXT NOT NULL)`,
			`CREATE TABLE users (
				id {id},
				email TEXT NOT NULL,
				name TEXT NOT NULL DEFAULT '',
				admin BOOLEAN NOT NULL DEFAULT FALSE,
				created_at {time} NOT NULL)`,
			`CREATE UNIQUE INDEX users_email ON users (lower(email))`,
			`CREATE TABLE api_tokens (
				id {id},
				user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
				hash TEXT NOT NULL,
				name TEXT NOT NULL DEFAULT '',
				created_at {time} NOT NULL,
				last_used_at {time})`,
			`CREATE UNIQUE INDEX api_tokens_hash ON api_tokens (hash)`,
			`CREATE INDEX api_tokens_user ON api_tokens (user_id)`,
		}},
		{Version: 2, Name: "system SMTP accounts, outbox and send log", Statements: []string{
			`CREATE TABLE smtp_accounts (
				id {id},
				active BOOLEAN NOT NULL DEFAULT TRUE,
				sender_name TEXT NOT NULL DEFAULT '',
				email TEXT NOT NULL,
				host TEXT NOT NULL,
				port INTEGER NOT NULL,
				security TEXT NOT NULL,
				auth TEXT NOT NULL,
				login TEXT NOT NULL DEFAULT '',
				password TEXT NOT NULL DEFAULT '',
				shared_with_users BOOLEAN NOT NULL DEFAULT FALSE,
				daily_limit INTEGER NOT NULL DEFAULT 0,
				checked_at {time},
				check_ok BOOLEAN NOT NULL DEFAULT FALSE,
				check_step TEXT NOT NULL DEFAULT '',
				check_code TEXT NOT NULL DEFAULT '',
				auth_failed BOOLEAN NOT NULL DEFAULT FALSE,
				created_at {time} NOT NULL,
				updated_at {time} NOT NULL)`,
			`CREATE UNIQUE INDEX smtp_accounts_email ON smtp_accounts (lower(email))`,
			// outbox holds every accepted message until it ends sent, failed
			// or unknown. raw is the exact RFC 5322 message sent on every
			// attempt (its Message-ID fixed at submit time). A row is claimed
			// by setting status 'sending' with a lease; a lease that runs out
			// means its holder died and the row may be claimed again.
			// next_attempt_at NULL means no attempt is scheduled (final).
			`CREATE TABLE outbox (
				id {id},
				message_id TEXT NOT NULL,
				user_id BIGINT REFERENCES users (id) ON DELETE SET NULL,
				route_kind TEXT NOT NULL,
				route_id BIGINT NOT NULL,
				from_addr TEXT NOT NULL,
				envelope_from TEXT NOT NULL,
				recipients TEXT NOT NULL,
				subject TEXT NOT NULL DEFAULT '',
				raw {blob} NOT NULL,
				size BIGINT NOT NULL,
				status TEXT NOT NULL,
				attempts INTEGER NOT NULL DEFAULT 0,
				unknown_count INTEGER NOT NULL DEFAULT 0,
				next_attempt_at {time},
				lease_owner TEXT NOT NULL DEFAULT '',
				lease_until {time},
				last_step TEXT NOT NULL DEFAULT '',
				last_code INTEGER NOT NULL DEFAULT 0,
				last_reply TEXT NOT NULL DEFAULT '',
				last_error TEXT NOT NULL DEFAULT '',
				crm_entity_type TEXT NOT NULL DEFAULT '',
				crm_entity_id TEXT NOT NULL DEFAULT '',
				created_at {time} NOT NULL,
				updated_at {time} NOT NULL,
				sent_at {time})`,
			`CREATE INDEX outbox_due ON outbox (status, next_attempt_at)`,
			`CREATE INDEX outbox_lease ON outbox (status, lease_until)`,
			`CREATE INDEX outbox_user ON outbox (user_id)`,
			// send_log has one row per attempt; it outlives the outbox row.
			`CREATE TABLE send_log (
				id {id},
				outbox_id BIGINT NOT NULL,
				message_id TEXT NOT NULL,
				user_id BIGINT,
				route_kind TEXT NOT NULL,
				route_id BIGINT NOT NULL,
				account_email TEXT NOT NULL DEFAULT '',
				from_addr TEXT NOT NULL,
				recipients TEXT NOT NULL,
				subject TEXT NOT NULL DEFAULT '',
				status TEXT NOT NULL,
				step TEXT NOT NULL DEFAULT '',
				code INTEGER NOT NULL DEFAULT 0,
				reply TEXT NOT NULL DEFAULT '',
				duration_ms BIGINT NOT NULL DEFAULT 0,
				crm_entity_type TEXT NOT NULL DEFAULT '',
				crm_entity_id TEXT NOT NULL DEFAULT '',
				created_at {time} NOT NULL)`,
			`CREATE INDEX send_log_created ON send_log (created_at)`,
			`CREATE INDEX send_log_route ON send_log (route_kind, route_id, status, created_at)`,
			`CREATE INDEX send_log_user ON send_log (user_id, created_at)`,
		}},
		{Version: 3, Name: "mailboxes, folders and senders", Statements: []string{
			// mailboxes are connected IMAP mailboxes with their outgoing block.
			// out_source says where the SMTP settings come from: "preset"
			// (the provider's, with the IMAP login), "system" (the system
			// account out_account_id), or "manual" (smtp_* columns).
			`CREATE TABLE mailboxes (
				id {id},
				user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
				email TEXT NOT NULL,
				name TEXT NOT NULL DEFAULT '',
				provider TEXT NOT NULL DEFAULT '',
				imap_host TEXT NOT NULL,
				imap_port INTEGER NOT NULL,
				imap_security TEXT NOT NULL,
				imap_login TEXT NOT NULL,
				imap_password TEXT NOT NULL,
				out_enabled BOOLEAN NOT NULL DEFAULT FALSE,
				out_save_copy BOOLEAN NOT NULL DEFAULT FALSE,
				out_source TEXT NOT NULL DEFAULT '',
				out_account_id BIGINT,
				smtp_host TEXT NOT NULL DEFAULT '',
				smtp_port INTEGER NOT NULL DEFAULT 0,
				smtp_security TEXT NOT NULL DEFAULT '',
				smtp_auth TEXT NOT NULL DEFAULT '',
				smtp_login TEXT NOT NULL DEFAULT '',
				smtp_password TEXT NOT NULL DEFAULT '',
				sync_state TEXT NOT NULL DEFAULT 'pending',
				last_sync_at {time},
				last_sync_ok BOOLEAN NOT NULL DEFAULT FALSE,
				last_error TEXT NOT NULL DEFAULT '',
				auth_failed BOOLEAN NOT NULL DEFAULT FALSE,
				settings_version INTEGER NOT NULL DEFAULT 1,
				created_at {time} NOT NULL,
				updated_at {time} NOT NULL)`,
			`CREATE UNIQUE INDEX mailboxes_user_email ON mailboxes (user_id, lower(email))`,
			// mailbox_folders are the folders LIST found; selected ones sync.
			// uidvalidity, uidnext and highest_modseq are the sync state of
			// the folder (RFC 3501 2.3.1.1, RFC 7162): they advance in the
			// same transaction as the message rows they cover.
			`CREATE TABLE mailbox_folders (
				id {id},
				mailbox_id BIGINT NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
				name TEXT NOT NULL,
				delimiter TEXT NOT NULL DEFAULT '',
				special_use TEXT NOT NULL DEFAULT '',
				no_select BOOLEAN NOT NULL DEFAULT FALSE,
				selected BOOLEAN NOT NULL DEFAULT FALSE,
				uidvalidity BIGINT NOT NULL DEFAULT 0,
				uidnext BIGINT NOT NULL DEFAULT 0,
				highest_modseq BIGINT NOT NULL DEFAULT 0,
				total INTEGER NOT NULL DEFAULT 0,
				synced INTEGER NOT NULL DEFAULT 0,
				last_sync_at {time},
				created_at {time} NOT NULL)`,
			`CREATE UNIQUE INDEX mailbox_folders_name ON mailbox_folders (mailbox_id, name)`,
			// senders are the CRM's "From" choices: kind mailbox (mirrored
			// from a mailbox with outgoing on; settings live on the mailbox),
			// smtp (own SMTP server, settings here), address (confirmed by a
			// mailed code; sent through the portal's relay).
			`CREATE TABLE senders (
				id {id},
				kind TEXT NOT NULL,
				user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
				email TEXT NOT NULL,
				name TEXT NOT NULL DEFAULT '',
				shared BOOLEAN NOT NULL DEFAULT FALSE,
				mailbox_id BIGINT REFERENCES mailboxes (id) ON DELETE CASCADE,
				smtp_host TEXT NOT NULL DEFAULT '',
				smtp_port INTEGER NOT NULL DEFAULT 0,
				smtp_security TEXT NOT NULL DEFAULT '',
				smtp_auth TEXT NOT NULL DEFAULT '',
				smtp_login TEXT NOT NULL DEFAULT '',
				smtp_password TEXT NOT NULL DEFAULT '',
				auth_failed BOOLEAN NOT NULL DEFAULT FALSE,
				created_at {time} NOT NULL,
				updated_at {time} NOT NULL)`,
			`CREATE UNIQUE INDEX senders_mailbox ON senders (mailbox_id)`,
			`CREATE UNIQUE INDEX senders_owner_kind_email ON senders (user_id, kind, lower(email))`,
			`ALTER TABLE outbox ADD COLUMN sent_copy TEXT NOT NULL DEFAULT ''`,
		}},
		{Version: 4, Name: "synced messages, sync leases and quarantine", Statements: []string{
			// messages mirror the selected folders (package imapsync). A row
			// is one message of one folder at one UIDVALIDITY (RFC 3501
			// 2.3.1.1): (folder_id, uidvalidity, uid) is unique, and a new
			// UIDVALIDITY removes the folder's older rows. from_addr, to_addr
			// and cc_addr are JSON arrays of {"name","email"}; refs is the
			// References header's ids, space-separated; flags are sorted and
			// space-separated, \Recent left out; attachments is a JSON array
			// of file names. raw is the RFC 822 message as the server sent it,
			// gzip-compressed; NULL when the message was larger than the
			// engine's size cap (raw_omitted). The sync engine writes a row
			// only when it changes, so a sync of an unchanged folder writes
			// nothing. raw comes last so that scans of the other columns stay
			// off its pages.
			`CREATE TABLE messages (
				id {id},
				mailbox_id BIGINT NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
				folder_id BIGINT NOT NULL REFERENCES mailbox_folders (id) ON DELETE CASCADE,
				uidvalidity BIGINT NOT NULL,
				uid BIGINT NOT NULL,
				modseq BIGINT NOT NULL DEFAULT 0,
				message_id TEXT NOT NULL DEFAULT '',
				in_reply_to TEXT NOT NULL DEFAULT '',
				refs TEXT NOT NULL DEFAULT '',
				sent_at {time},
				internal_date {time} NOT NULL,
				from_addr TEXT NOT NULL DEFAULT '[]',
				to_addr TEXT NOT NULL DEFAULT '[]',
				cc_addr TEXT NOT NULL DEFAULT '[]',
				subject TEXT NOT NULL DEFAULT '',
				flags TEXT NOT NULL DEFAULT '',
				size BIGINT NOT NULL DEFAULT 0,
				snippet TEXT NOT NULL DEFAULT '',
				attachments TEXT NOT NULL DEFAULT '[]',
				raw_omitted BOOLEAN NOT NULL DEFAULT FALSE,
				created_at {time} NOT NULL,
				raw {blob})`,
			`CREATE UNIQUE INDEX messages_folder_uid ON messages (folder_id, uidvalidity, uid)`,
			`CREATE INDEX messages_folder_date ON messages (folder_id, internal_date, id)`,
			`CREATE INDEX messages_mailbox_date ON messages (mailbox_id, internal_date, id)`,
			// sync_leases give each mailbox to one sync worker at a time. A
			// holder renews expires_at; a lease past expires_at (its holder
			// died) or with owner '' is free. sync_requested asks the holder,
			// whichever instance it is, for a sync pass now.
			`CREATE TABLE sync_leases (
				mailbox_id BIGINT PRIMARY KEY REFERENCES mailboxes (id) ON DELETE CASCADE,
				owner TEXT NOT NULL DEFAULT '',
				expires_at {time} NOT NULL,
				acquired_at {time} NOT NULL,
				sync_requested BOOLEAN NOT NULL DEFAULT FALSE)`,
			`CREATE INDEX sync_leases_owner ON sync_leases (owner, expires_at)`,
			// sync_instances are the live sync engines (heartbeat in seen_at),
			// so that each takes an even share of the mailboxes.
			`CREATE TABLE sync_instances (
				id TEXT PRIMARY KEY,
				started_at {time} NOT NULL,
				seen_at {time} NOT NULL)`,
			// sync_quarantine counts the failed attempts at a message that
			// cannot be read; after the engine's limit it is quarantined:
			// left out of every later sync of that UIDVALIDITY.
			`CREATE TABLE sync_quarantine (
				id {id},
				mailbox_id BIGINT NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
				folder_id BIGINT NOT NULL REFERENCES mailbox_folders (id) ON DELETE CASCADE,
				uidvalidity BIGINT NOT NULL,
				uid BIGINT NOT NULL,
				attempts INTEGER NOT NULL DEFAULT 0,
				quarantined BOOLEAN NOT NULL DEFAULT FALSE,
				last_error TEXT NOT NULL DEFAULT '',
				updated_at {time} NOT NULL)`,
			`CREATE UNIQUE INDEX sync_quarantine_uid ON sync_quarantine (folder_id, uidvalidity, uid)`,
		}},
		// Version 4 is the IMAP sync's.
		{Version: 5, Name: "sender confirmations", Statements: []string{
			// sender_confirmations are addresses waiting for the code mailed
			// to them. Only a salted hash of the code is stored.
			`CREATE TABLE sender_confirmations (
				id {id},
				user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
				email TEXT NOT NULL,
				name TEXT NOT NULL DEFAULT '',
				shared BOOLEAN NOT NULL DEFAULT FALSE,
				code_hash TEXT NOT NULL,
				attempts INTEGER NOT NULL DEFAULT 0,
				expires_at {time} NOT NULL,
				used_at {time},
				outbox_id BIGINT,
				created_at {time} NOT NULL)`,
			`CREATE INDEX sender_confirmations_user ON sender_confirmations (user_id, created_at)`,
			`CREATE INDEX sender_confirmations_email ON sender_confirmations (lower(email), created_at)`,
		}},
		{Version: 6, Name: "outbox bodies apart from their status rows", Statements: []string{
			// A message's bytes are written once; its status row changes at
			// least twice (claimed, sent). SQLite rewrites a whole row, with
			// its overflow pages, on every UPDATE: apart, a status change
			// writes a few hundred bytes instead of the message again.
			`CREATE TABLE outbox_bodies (
				outbox_id BIGINT PRIMARY KEY REFERENCES outbox (id) ON DELETE CASCADE,
				raw {blob} NOT NULL)`,
			`INSERT INTO outbox_bodies (outbox_id, raw) SELECT id, raw FROM outbox`,
			`ALTER TABLE outbox DROP COLUMN raw`,
		}},
		{Version: 7, Name: "synced messages' raw bytes by codec", Statements: []string{
			// raw_codec says how messages.raw is encoded: 'gzip' (every row
			// written before this version), 's2' (an S2 block, for bytes it
			// shrinks by an eighth or more: text and HTML) or 'none' (the
			// bytes as the server sent them: attachments, which are base64
			// of compressed data). The sync engine writes it on every row;
			// the default only labels the older rows.
			`ALTER TABLE messages ADD COLUMN raw_codec TEXT NOT NULL DEFAULT 'gzip'`,
		}, Postgres: []string{
			// Values are already compressed or incompressible: TOAST stores
			// them out of line without trying pglz on them first, which cost
			// PostgreSQL more CPU than writing them.
			`ALTER TABLE messages ALTER COLUMN raw SET STORAGE EXTERNAL`,
		}},
		{Version: 8, Name: "outbox bodies by codec", Statements: []string{
			// codec says how outbox_bodies.raw is encoded: '' (the message's
			// bytes: every row written before this version, and bodies that
			// do not shrink) or 's2' (an S2 block). outgoing/body.go.
			`ALTER TABLE outbox_bodies ADD COLUMN codec TEXT NOT NULL DEFAULT ''`,
		}, Postgres: []string{
			// As messages.raw in version 7: compressed already, or not worth
			// pglz's CPU.
			`ALTER TABLE outbox_bodies ALTER COLUMN raw SET STORAGE EXTERNAL`,
		}},
	}
}

// SecretColumn names a column that holds values sealed by secret.Box, in a
// table whose primary key is the int64 column id. The AAD of each value is
// secret.AAD(Table, Column, id).
type SecretColumn struct {
	Table  string
	Column string
}

// SecretColumns lists every sealed column; RotateKey walks it. A migration
// that adds a sealed column adds it here too.
func SecretColumns() []SecretColumn {
	return []SecretColumn{
		{Table: "smtp_accounts", Column: "password"},
		{Table: "mailboxes", Column: "imap_password"},
		{Table: "mailboxes", Column: "smtp_password"},
		{Table: "senders", Column: "smtp_password"},
	}
}
