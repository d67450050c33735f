package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/store"
)

// openDB opens and migrates the configured database.
func openDB(ctx context.Context, cfg *Config, log *slog.Logger) (*store.DB, error) {
	db, err := store.Open(ctx, cfg.DB, store.Options{Logger: log})
	if err != nil {
		return nil, err
	}
	applied, err := db.Migrate(ctx)
	if err != nil {
		db.Close()
		return nil, err
	}
	for _, v := range applied {
		log.Info("applied migration", "version", v)
	}
	return db, nil
}

// openBox loads the secret key and proves it is the database's. With the
// embedded database and no key configured, a fresh database gets a new key
// file under the data folder.
func openBox(ctx context.Context, cfg *Config, db *store.DB, log *slog.Logger) (*secret.Box, error) {
	sealedWith, err := db.SealedWith(ctx)
	if err != nil {
		return nil, err
	}
	var (
		key    *secret.Key
		source string
	)
	switch {
	case cfg.SecretKey != "":
		source = "MAILSYNC_SECRET_KEY"
		if key, err = secret.ParseKey(cfg.SecretKey); err != nil {
			return nil, fmt.Errorf("MAILSYNC_SECRET_KEY: %w", err)
		}
	case cfg.SecretKeyFile != "":
		source = "MAILSYNC_SECRET_KEY_FILE=" + cfg.SecretKeyFile
		if key, err = secret.LoadKeyFile(cfg.SecretKeyFile); err != nil {
			return nil, fmt.Errorf("MAILSYNC_SECRET_KEY_FILE: %w", err)
		}
	default:
		path := cfg.defaultKeyFile()
		source = "the key file " + path
		key, err = secret.LoadKeyFile(path)
		switch {
		case err == nil:
		case !errors.Is(err, fs.ErrNotExist):
			return nil, err
		case sealedWith != "":
			return nil, fmt.Errorf("secret key file %s is missing, but this database's secrets are sealed with key id %s: restore the file or set MAILSYNC_SECRET_KEY", path, sealedWith)
		case !cfg.embedded():
			return nil, errors.New("no secret key: set MAILSYNC_SECRET_KEY or MAILSYNC_SECRET_KEY_FILE (every instance sharing a PostgreSQL database needs the same key)")
		default:
			if err := secret.WriteKeyFile(path); err != nil {
				return nil, err
			}
			if key, err = secret.LoadKeyFile(path); err != nil {
				return nil, err
			}
			log.Info("generated a new secret key", "path", path, "key_id", key.ID())
		}
	}
	box := secret.NewBox(key)
	if err := db.CheckKey(ctx, box, source); err != nil {
		return nil, err
	}
	return box, nil
}
