package imapsync

import (
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
)

// messageRow is a synced message as stored (table messages, migration 4).
type messageRow struct {
	ID           int64
	MailboxID    int64
	FolderID     int64
	UIDValidity  uint32 `gorm:"column:uidvalidity"`
	UID          uint32 `gorm:"column:uid"`
	ModSeq       uint64 `gorm:"column:modseq"`
	MessageID    string
	InReplyTo    string
	Refs         string
	SentAt       *time.Time
	InternalDate time.Time
	FromAddr     string
	ToAddr       string
	CcAddr       string
	Subject      string
	Flags        string
	Size         int64
	Snippet      string
	Attachments  string
	RawOmitted   bool
	CreatedAt    time.Time
	RawCodec     string // how Raw is encoded: codecB64, codecS2, codecNone (codecGzip in rows before migration 7)
	Raw          []byte
}

func (messageRow) TableName() string { return "messages" }

// leaseRow is a mailbox's sync lease (table sync_leases).
type leaseRow struct {
	MailboxID     int64 `gorm:"primaryKey;autoIncrement:false"`
	Owner         string
	ExpiresAt     time.Time
	AcquiredAt    time.Time
	SyncRequested bool
}

func (leaseRow) TableName() string { return "sync_leases" }

// quarantineRow counts failed attempts at one message (table
// sync_quarantine).
type quarantineRow struct {
	ID          int64
	MailboxID   int64
	FolderID    int64
	UIDValidity uint32 `gorm:"column:uidvalidity"`
	UID         uint32 `gorm:"column:uid"`
	Attempts    int
	Quarantined bool
	LastError   string
	UpdatedAt   time.Time
}

func (quarantineRow) TableName() string { return "sync_quarantine" }

// Address is one mailbox of an address header, decoded.
type Address struct {
	Name  string `json:"name,omitempty"`
	Email string `json:"email"`
}

// flagString is the stored form of a flag list: sorted, deduplicated,
// space-separated, without \Recent (which depends on the session that
// looks, so storing it would turn every new session into a change).
func flagString(flags []imap.Flag) string {
	out := make([]string, 0, len(flags))
	for _, f := range flags {
		if strings.EqualFold(string(f), `\Recent`) || f == "" {
			continue
		}
		out = append(out, string(f))
	}
	slices.Sort(out)
	// An atom may hold bytes that are not UTF-8 (go-imap takes any byte
	// but controls), which a PostgreSQL TEXT column refuses.
	return clean(strings.Join(slices.Compact(out), " "), 0)
}

// splitFlags is the inverse of flagString.
func splitFlags(s string) []string {
	if s == "" {
		return []string{}
	}
	return strings.Split(s, " ")
}

func addressJSON(list []Address) string {
	if len(list) == 0 {
		return "[]"
	}
	b, _ := json.Marshal(list)
	return string(b)
}

func parseAddressJSON(s string) []Address {
	var out []Address
	_ = json.Unmarshal([]byte(s), &out)
	if out == nil {
		out = []Address{}
	}
	return out
}

func stringsJSON(list []string) string {
	if len(list) == 0 {
		return "[]"
	}
	b, _ := json.Marshal(list)
	return string(b)
}

func parseStringsJSON(s string) []string {
	var out []string
	_ = json.Unmarshal([]byte(s), &out)
	if out == nil {
		out = []string{}
	}
	return out
}

// clean makes s storable in a TEXT column of both dialects: valid UTF-8
// without NUL (PostgreSQL refuses both), at most max bytes.
func clean(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "")
	}
	if max > 0 && len(s) > max {
		// The cut may split a rune; dropping the invalid tail mends it.
		s = strings.ToValidUTF8(s[:max], "")
	}
	return s
}
