package imapsync_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailsync/mailsync/api"
	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
	"github.com/mailsync/mailsync/internal/users"
	imapsync "github.com/mailsync/mailsync/sync"
)

type tokens map[string]users.User

func (f tokens) Authenticate(_ context.Context, token string) (users.User, error) {
	if u, ok := f[token]; ok {
		return u, nil
	}
	return users.User{}, apperr.New(apperr.ErrUnauthenticated, "unauthenticated", "a valid API token is required")
}

type ready struct{}

func (ready) Ready(context.Context) error { return nil }

// TestMessagesAPI lists, pages, views and downloads synced messages over
// the HTTP API, as the owner, an admin and someone else.
func TestMessagesAPI(t *testing.T) {
	t.Parallel()
	db := storetest.Open(t, store.SQLite)
	var msgs [][]byte
	for i := range 5 {
		msgs = append(msgs, imapsync.GenMessage(i, 300))
	}
	msgs = append(msgs, []byte("From: =?UTF-8?Q?J=C3=B6rg?= <jorg@example.org>\r\nTo: ann@example.test\r\n"+
		"Subject: =?windows-1251?B?z/Do4uXy?=\r\nMessage-ID: <view@example.org>\r\nDate: Mon, 2 Mar 2026 10:00:00 +0300\r\n"+
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"x\"\r\n\r\n--x\r\n"+
		"Content-Type: multipart/alternative; boundary=\"y\"\r\n\r\n--y\r\nContent-Type: text/plain; charset=koi8-r\r\n\r\n"+
		"\xf0\xd2\xc9\xd7\xc5\xd4 \xcd\xc9\xd2\r\n--y\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Привет мир</p>\r\n--y--\r\n"+
		"--x\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename*=UTF-8''%D0%BE%D1%82%D1%87%D1%91%D1%82.xlsx\r\n"+
		"Content-Transfer-Encoding: base64\r\n\r\nAAECAwQF\r\n--x--\r\n"))
	fx := imapsync.NewAPIFixture(t, db, msgs)
	srv := api.New(api.Deps{
		Users: tokens{
			"owner": {ID: 1, Email: "owner@example.com"},
			"other": {ID: 2, Email: "other@example.com"},
			"admin": {ID: 3, Email: "admin@example.com", Admin: true},
		},
		Ready: ready{}, Mailboxes: fx.Mailboxes, Messages: fx.Engine,
	})
	call := func(method, path, token string) (*httptest.ResponseRecorder, map[string]any) {
		t.Helper()
		req := httptest.NewRequest(method, path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		var body map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		return rec, body
	}
	base := fmt.Sprintf("/api/v1/mailboxes/%d", fx.MailboxID)

	// Pages, newest first, no overlap.
	seen := map[float64]bool{}
	last := "9999"
	cursor := ""
	for page := 0; ; page++ {
		rec, body := call("GET", base+"/messages?folder=INBOX&limit=4&cursor="+cursor, "owner")
		if rec.Code != 200 {
			t.Fatalf("GET messages = %d %s", rec.Code, rec.Body)
		}
		for _, m := range body["messages"].([]any) {
			id := m.(map[string]any)["id"].(float64)
			if seen[id] {
				t.Errorf("message %v on two pages", id)
			}
			seen[id] = true
			at := m.(map[string]any)["internal_date"].(string)
			if at > last {
				t.Errorf("message %v (%s) after one of %s: not newest first", id, at, last)
			}
			last = at
		}
		cursor, _ = body["next_cursor"].(string)
		if cursor == "" {
			break
		}
		if page > 3 {
			t.Fatal("paging does not end")
		}
	}
	if len(seen) != 6 {
		t.Errorf("pages hold %d messages, want 6", len(seen))
	}
	if rec, _ := call("GET", base+"/messages?folder=Nope", "owner"); rec.Code != 400 {
		t.Errorf("unknown folder = %d, want 400", rec.Code)
	}
	if rec, _ := call("GET", base+"/messages?limit=0", "owner"); rec.Code != 400 {
		t.Errorf("limit=0 = %d, want 400", rec.Code)
	}
	if rec, _ := call("GET", base+"/messages", "other"); rec.Code != 404 {
		t.Errorf("someone else's mailbox = %d, want 404", rec.Code)
	}
	if rec, _ := call("GET", base+"/messages", "admin"); rec.Code != 200 {
		t.Errorf("an admin = %d, want 200", rec.Code)
	}

	// The view of the multipart message.
	rec, list := call("GET", base+"/messages?limit=10", "owner")
	if rec.Code != 200 {
		t.Fatal(rec.Body)
	}
	var viewID float64
	for _, m := range list["messages"].([]any) {
		if mm := m.(map[string]any); mm["message_id"] == "view@example.org" {
			viewID = mm["id"].(float64)
			if mm["subject"] != "Привет" || !strings.Contains(fmt.Sprint(mm["from"]), "Jörg") ||
				!strings.Contains(mm["snippet"].(string), "Привет мир") || fmt.Sprint(mm["attachments"]) != "[отчёт.xlsx]" {
				t.Errorf("summary = %v", mm)
			}
		}
	}
	rec, view := call("GET", fmt.Sprintf("%s/messages/%d", base, int64(viewID)), "owner")
	if rec.Code != 200 {
		t.Fatalf("GET message = %d %s", rec.Code, rec.Body)
	}
	if !strings.Contains(view["text"].(string), "Привет мир") || !strings.Contains(view["html"].(string), "<p>Привет мир</p>") {
		t.Errorf("view text %q, html %q", view["text"], view["html"])
	}
	parts := view["attachment_parts"].([]any)
	if len(parts) != 1 || parts[0].(map[string]any)["name"] != "отчёт.xlsx" || parts[0].(map[string]any)["size"].(float64) != 6 {
		t.Errorf("attachment parts = %v", parts)
	}
	if rec, _ := call("GET", fmt.Sprintf("%s/messages/%d", base, int64(viewID)), "other"); rec.Code != 404 {
		t.Errorf("someone else's message = %d, want 404", rec.Code)
	}
	if rec, _ := call("GET", fmt.Sprintf("%s/messages/%d", base, 99999), "owner"); rec.Code != 404 {
		t.Errorf("no such message = %d, want 404", rec.Code)
	}

	// Raw: the server's bytes.
	rec, _ = call("GET", fmt.Sprintf("%s/messages/%d?format=raw", base, int64(viewID)), "owner")
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "message/rfc822" {
		t.Fatalf("raw = %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	if want := serverBody(t, fx.Peer, "view@example.org"); !bytes.Equal(rec.Body.Bytes(), want) {
		t.Errorf("raw differs from the server's message (%d vs %d bytes)", rec.Body.Len(), len(want))
	}

	// Sync now, and the folders with their counts.
	rec, body := call("POST", base+"/sync", "owner")
	if rec.Code != 202 || body["queued"] != true {
		t.Errorf("POST sync = %d %v, want 202 queued", rec.Code, body)
	}
	rec, body = call("GET", base+"/folders", "owner")
	if rec.Code != 200 {
		t.Fatal(rec.Body)
	}
	for _, f := range body["folders"].([]any) {
		if ff := f.(map[string]any); ff["name"] == "INBOX" && (ff["total"].(float64) != 6 || ff["synced"].(float64) != 6) {
			t.Errorf("INBOX folder = %v, want 6 of 6 synced", ff)
		}
	}
}

func serverBody(t *testing.T, c *imapclient.Client, messageID string) []byte {
	t.Helper()
	if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	found, err := c.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Message-ID", Value: messageID}}}, nil).Wait()
	if err != nil || len(found.AllUIDs()) != 1 {
		t.Fatalf("search %s: %v %v", messageID, found, err)
	}
	cmd := c.Fetch(imap.UIDSetNum(found.AllUIDs()[0]), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
	defer cmd.Close()
	msg := cmd.Next()
	for item := msg.Next(); item != nil; item = msg.Next() {
		if b, ok := item.(imapclient.FetchItemDataBodySection); ok {
			out, _ := io.ReadAll(b.Literal)
			return out
		}
	}
	t.Fatal("no body")
	return nil
}
