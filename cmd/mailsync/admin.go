package main

import (
	"context"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/users"
)

func cmdMigrate(ctx context.Context, e env, args []string) error {
	var cfg Config
	if _, err := parseConfig("migrate", commonSettings(&cfg), args, e.getenv, e.stderr); err != nil {
		return err
	}
	cfg.finish()
	log, err := newLogger(&cfg, e.stderr)
	if err != nil {
		return err
	}
	db, err := store.Open(ctx, cfg.DB, store.Options{Logger: log})
	if err != nil {
		return err
	}
	defer db.Close()
	applied, err := db.Migrate(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "applied %d migration(s) %v; schema at version %d\n", len(applied), applied, store.LatestVersion())
	return nil
}

func cmdUser(ctx context.Context, e env, args []string) error {
	if len(args) == 0 {
		return usageError{"user needs a subcommand: add, token or list"}
	}
	var (
		cfg   Config
		email string
		name  string
		admin bool
	)
	settings := commonSettings(&cfg)
	sub := args[0]
	switch sub {
	case "add":
		settings = append(settings,
			setting{flag: "email", help: "the user's email address", dst: &email},
			setting{flag: "name", help: "the user's name", dst: &name},
			setting{flag: "admin", def: "false", help: "make the user an administrator", dst: &admin})
	case "token":
		settings = append(settings, setting{flag: "email", help: "the user's email address", dst: &email})
	case "list":
	default:
		return usageError{fmt.Sprintf("unknown user subcommand %q: want add, token or list", sub)}
	}
	rest, err := parseConfig("user "+sub, settings, args[1:], e.getenv, e.stderr)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError{fmt.Sprintf("unexpected arguments %q", rest)}
	}
	if sub != "list" && email == "" {
		return usageError{"--email is required"}
	}
	cfg.finish()
	log, err := newLogger(&cfg, e.stderr)
	if err != nil {
		return err
	}
	db, err := openDB(ctx, &cfg, log)
	if err != nil {
		return err
	}
	defer db.Close()
	us := users.New(db)
	switch sub {
	case "add":
		u, tok, err := us.CreateWithToken(ctx, email, name, admin)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "created user %d %s (admin: %v); API token, shown only now:\n%s\n", u.ID, u.Email, u.Admin, tok.Reveal())
	case "token":
		u, err := us.ByEmail(ctx, email)
		if err != nil {
			return fmt.Errorf("user %s: %w", email, err)
		}
		tok, err := us.IssueToken(ctx, u.ID, "cli")
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "new API token for %s, shown only now:\n%s\n", u.Email, tok.Reveal())
	case "list":
		list, err := us.List(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tEMAIL\tNAME\tADMIN\tCREATED")
		for _, u := range list {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%v\t%s\n", u.ID, u.Email, u.Name, u.Admin, u.CreatedAt.Format("2006-01-02 15:04"))
		}
		return tw.Flush()
	}
	return nil
}

func cmdRotateKey(ctx context.Context, e env, args []string) error {
	var (
		cfg     Config
		newFile string
	)
	settings := append(commonSettings(&cfg),
		setting{flag: "new-key-file", help: "file holding the new base64 key (see: head -c32 /dev/urandom | base64)", dst: &newFile})
	if _, err := parseConfig("rotate-key", settings, args, e.getenv, e.stderr); err != nil {
		return err
	}
	if newFile == "" {
		return usageError{"--new-key-file is required"}
	}
	cfg.finish()
	log, err := newLogger(&cfg, e.stderr)
	if err != nil {
		return err
	}
	newKey, err := secret.LoadKeyFile(newFile)
	if err != nil {
		return err
	}
	db, err := openDB(ctx, &cfg, log)
	if err != nil {
		return err
	}
	defer db.Close()
	current, err := openBox(ctx, &cfg, db, log)
	if err != nil {
		return err
	}
	n, err := db.RotateKey(ctx, current, secret.NewBox(newKey), store.SecretColumns())
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "re-sealed %d secret(s) with key id %s.\n", n, newKey.ID())
	if cfg.SecretKey != "" || cfg.SecretKeyFile != "" {
		fmt.Fprintf(e.stdout, "Now start mailsync with MAILSYNC_SECRET_KEY_FILE=%s (on every instance); the old key is no longer needed.\n", newFile)
		return nil
	}
	// The embedded set-up reads its key from the data folder: put the new
	// key there, keeping the old one beside it until the operator deletes it.
	path := cfg.defaultKeyFile()
	old := path + ".old-" + current.PrimaryID()
	raw, err := os.ReadFile(newFile)
	if err != nil {
		return fmt.Errorf("read %s: %w", newFile, err)
	}
	if err := os.Rename(path, old); err != nil {
		return fmt.Errorf("keep the old key as %s: %w", old, err)
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		return fmt.Errorf("write the new key to %s (the old one is %s): %w", path, old, err)
	}
	fmt.Fprintf(e.stdout, "%s now holds the new key; the old one is kept as %s: delete it once you are sure.\n", path, old)
	return nil
}
