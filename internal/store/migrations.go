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
	return []SecretColumn{}
}
