package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Config is every setting of the mailsync command, read once from defaults,
// then MAILSYNC_* environment variables, then flags.
type Config struct {
	Listen          string
	DebugListen     string
	DataDir         string
	DB              string
	SecretKey       string // base64; from the environment only, never a flag
	SecretKeyFile   string
	AllowHosts      string
	AdminEmail      string
	LogLevel        string
	LogFormat       string
	ShutdownTimeout time.Duration

	ExtraCAFile         string
	HelloName           string
	CheckTimeout        time.Duration
	MaxMessageBytes     int
	MaxQueueAge         time.Duration
	OutboxLease         time.Duration
	SMTPConnsPerAccount int
	OutgoingStatusTTL   time.Duration
	ConfirmationAccount string
	SecureCookies       bool

	SubmissionListen        string
	SubmissionTLSListen     string
	SubmissionTLSCert       string
	SubmissionTLSKey        string
	SubmissionTrustLoopback bool

	SyncPollInterval    time.Duration
	SyncMaxMailboxes    int
	SyncLease           time.Duration
	SyncCommandTimeout  time.Duration
	SyncBatch           int
	SyncMaxMessageBytes int
}

// setting is one configurable value: its flag, its environment variable,
// its default and where it lands in Config.
type setting struct {
	flag string // "" = environment only
	env  string
	def  string
	help string
	dst  any // *string, *bool, *int, *time.Duration
}

func commonSettings(c *Config) []setting {
	return []setting{
		{"data-dir", "MAILSYNC_DATA_DIR", "./data", "folder for the embedded database and the generated secret key", &c.DataDir},
		{"db", "MAILSYNC_DB", "sqlite://<data-dir>/mailsync.db", "database: sqlite://PATH or postgres://USER@HOST:PORT/DB?sslmode=…", &c.DB},
		{"", "MAILSYNC_SECRET_KEY", "", "base64 AES-256 key sealing stored credentials (environment only)", &c.SecretKey},
		{"secret-key-file", "MAILSYNC_SECRET_KEY_FILE", "<data-dir>/secret.key", "file holding the base64 key; created on the first start with the embedded database", &c.SecretKeyFile},
		{"log-level", "MAILSYNC_LOG_LEVEL", "info", "debug, info, warn or error", &c.LogLevel},
		{"log-format", "MAILSYNC_LOG_FORMAT", "text", "text or json", &c.LogFormat},
	}
}

func serveSettings(c *Config) []setting {
	return append([]setting{
		{"listen", "MAILSYNC_LISTEN", "127.0.0.1:8080", "address of the HTTP API", &c.Listen},
		{"debug-listen", "MAILSYNC_DEBUG_LISTEN", "", "address of the Go profiler (/debug/pprof/); empty: off. Keep it on loopback: it has no authentication", &c.DebugListen},
		{"allow-hosts", "MAILSYNC_ALLOW_HOSTS", "", "comma-separated address ranges (CIDR) that user-named mail hosts may resolve to although private or loopback", &c.AllowHosts},
		{"admin-email", "MAILSYNC_ADMIN_EMAIL", "admin@localhost", "address of the admin created on the first start", &c.AdminEmail},
		{"shutdown-timeout", "MAILSYNC_SHUTDOWN_TIMEOUT", "15s", "how long in-flight requests and work may take to finish at shutdown", &c.ShutdownTimeout},
		{"extra-ca-file", "MAILSYNC_EXTRA_CA_FILE", "", "PEM certificates trusted besides the system roots when verifying mail servers", &c.ExtraCAFile},
		{"helo-name", "MAILSYNC_HELO_NAME", "<hostname>", "name mailsync gives in EHLO", &c.HelloName},
		{"check-timeout", "MAILSYNC_CHECK_TIMEOUT", "15s", "bound on one whole SMTP or IMAP check", &c.CheckTimeout},
		{"max-message-bytes", "MAILSYNC_MAX_MESSAGE_BYTES", "26214400", "largest message accepted for sending (25 MiB)", &c.MaxMessageBytes},
		{"max-queue-age", "MAILSYNC_MAX_QUEUE_AGE", "72h", "how long a message is retried before it fails", &c.MaxQueueAge},
		{"outbox-lease", "MAILSYNC_OUTBOX_LEASE", "2m", "lease on a message being sent; after it runs out another instance takes the message over", &c.OutboxLease},
		{"smtp-conns-per-account", "MAILSYNC_SMTP_CONNS_PER_ACCOUNT", "2", "concurrent SMTP connections per sending account", &c.SMTPConnsPerAccount},
		{"submission-listen", "MAILSYNC_SUBMISSION_LISTEN", "127.0.0.1:2525", "address of the SMTP submission port for sites (\"off\" turns it off)", &c.SubmissionListen},
		{"submission-tls-listen", "MAILSYNC_SUBMISSION_TLS_LISTEN", "", "address of an implicit-TLS submission port (needs the certificate)", &c.SubmissionTLSListen},
		{"submission-tls-cert", "MAILSYNC_SUBMISSION_TLS_CERT", "", "PEM certificate for STARTTLS and implicit TLS on the submission ports", &c.SubmissionTLSCert},
		{"submission-tls-key", "MAILSYNC_SUBMISSION_TLS_KEY", "", "PEM key of that certificate", &c.SubmissionTLSKey},
		{"submission-trust-loopback", "MAILSYNC_SUBMISSION_TRUST_LOOPBACK", "false", "accept mail without AUTH from 127.0.0.1/::1, sent as the admin (single-host sites only)", &c.SubmissionTrustLoopback},
		{"poll-interval", "MAILSYNC_POLL_INTERVAL", "5m", "how often folders other than INBOX are synced (INBOX follows IDLE); negative: never", &c.SyncPollInterval},
		{"max-mailboxes-per-instance", "MAILSYNC_MAX_MAILBOXES_PER_INSTANCE", "0", "most mailboxes one instance syncs (0: no cap; instances split them evenly)", &c.SyncMaxMailboxes},
		{"sync-lease", "MAILSYNC_SYNC_LEASE", "30s", "lease on a mailbox being synced; another instance takes it over after this", &c.SyncLease},
		{"imap-command-timeout", "MAILSYNC_IMAP_COMMAND_TIMEOUT", "60s", "an IMAP command with no progress for this long closes the connection", &c.SyncCommandTimeout},
		{"sync-batch", "MAILSYNC_SYNC_BATCH", "200", "messages per UID FETCH and per commit", &c.SyncBatch},
		{"sync-max-message-bytes", "MAILSYNC_SYNC_MAX_MESSAGE_BYTES", "67108864", "largest message whose raw bytes are stored", &c.SyncMaxMessageBytes},
		{"secure-cookies", "MAILSYNC_SECURE_COOKIES", "false", "mark the pages' session cookie Secure even on plain HTTP (behind a TLS-terminating proxy)", &c.SecureCookies},
		{"confirmation-account", "MAILSYNC_CONFIRMATION_ACCOUNT", "", "email of the system SMTP account that mails sender confirmation codes and relays mail from confirmed addresses", &c.ConfirmationAccount},
		{"outgoing-status-ttl", "MAILSYNC_OUTGOING_STATUS_TTL", "30s", "how long a mailbox's outgoing check, run when its settings are viewed, is reused", &c.OutgoingStatusTTL},
	}, commonSettings(c)...)
}

// parseConfig fills c from defaults, the environment and args, and returns
// the arguments left after the flags.
func parseConfig(name string, settings []setting, args []string, getenv func(string) string, stderr io.Writer) ([]string, error) {
	fs := flag.NewFlagSet("mailsync "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	for _, s := range settings {
		def := s.def
		if strings.Contains(def, "<") { // derived later, in finish
			def = ""
		}
		if err := setValue(s.dst, def); err != nil {
			return nil, fmt.Errorf("default of %s: %w", s.env, err)
		}
		if v := getenv(s.env); v != "" {
			if err := setValue(s.dst, v); err != nil {
				return nil, fmt.Errorf("%s: %w", s.env, err)
			}
		}
		if s.flag != "" {
			fs.Var(&flagValue{dst: s.dst}, s.flag, s.help)
		}
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: mailsync %s [flags]\n\nSettings (flag, environment variable, default):\n", name)
		tw := tabwriter.NewWriter(stderr, 2, 4, 2, ' ', 0)
		for _, s := range settings {
			f := "-" + s.flag
			if s.flag == "" {
				f = "(env only)"
			}
			def := s.def
			if def == "" {
				def = `""`
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", f, s.env, def, s.help)
		}
		tw.Flush()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return fs.Args(), nil
}

// finish derives the settings that depend on others.
func (c *Config) finish() {
	if c.DB == "" {
		c.DB = "sqlite://" + filepath.Join(c.DataDir, "mailsync.db")
	}
	if c.HelloName == "" {
		c.HelloName, _ = os.Hostname()
		if c.HelloName == "" {
			c.HelloName = "localhost"
		}
	}
}

// defaultKeyFile is where the embedded set-up keeps its generated key.
func (c *Config) defaultKeyFile() string { return filepath.Join(c.DataDir, "secret.key") }

// embedded reports whether the database is the default SQLite file, the one
// set-up where mailsync may generate its own key.
func (c *Config) embedded() bool { return strings.HasPrefix(c.DB, "sqlite://") }

type flagValue struct{ dst any }

func (f *flagValue) String() string {
	if f == nil || f.dst == nil {
		return ""
	}
	switch d := f.dst.(type) {
	case *string:
		return *d
	case *bool:
		return strconv.FormatBool(*d)
	case *int:
		return strconv.Itoa(*d)
	case *time.Duration:
		return d.String()
	}
	return ""
}

func (f *flagValue) Set(v string) error { return setValue(f.dst, v) }

func (f *flagValue) IsBoolFlag() bool { _, ok := f.dst.(*bool); return ok }

func setValue(dst any, v string) error {
	switch d := dst.(type) {
	case *string:
		*d = v
	case *bool:
		if v == "" {
			*d = false
			return nil
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		*d = b
	case *int:
		if v == "" {
			*d = 0
			return nil
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", v)
		}
		*d = n
	case *time.Duration:
		if v == "" {
			*d = 0
			return nil
		}
		t, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%q is not a duration such as 30s or 5m", v)
		}
		*d = t
	default:
		return errors.New("unsupported setting type")
	}
	return nil
}

// newLogger builds the process logger from the config.
func newLogger(c *Config, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("MAILSYNC_LOG_LEVEL %q: want debug, info, warn or error", c.LogLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.LogFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("MAILSYNC_LOG_FORMAT %q: want text or json", c.LogFormat)
	}
}
