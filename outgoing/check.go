package outgoing

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"mime"
	"mime/quotedprintable"
	"strings"
	"time"

	"github.com/mailsync/mailsync/internal/i18n"
)

// DefaultCheckTimeout bounds a whole check when CheckRequest.Timeout is 0.
const DefaultCheckTimeout = 15 * time.Second

// StepResult is one line of a check report.
type StepResult struct {
	Step      Step   `json:"step"`
	OK        bool   `json:"ok"`
	ElapsedMS int64  `json:"elapsed_ms"`
	Reply     *Reply `json:"reply,omitempty"`
	// Detail is what the step found, e.g. "offered: PLAIN LOGIN; used:
	// PLAIN", "TLS 1.3, certificate for …", the resolved addresses.
	Detail string `json:"detail,omitempty"`
	// Code is the machine-readable explanation of a failure (see Explain).
	Code string `json:"code,omitempty"`
	// Explanation and Hint are plain language, in the requested language.
	Explanation string `json:"explanation,omitempty"`
	Hint        string `json:"hint,omitempty"`
}

// Report is the outcome of a check: one StepResult per step that ran, in
// order, the last one failed when OK is false.
type Report struct {
	OK        bool         `json:"ok"`
	Steps     []StepResult `json:"steps"`
	Failed    Step         `json:"failed_step,omitempty"`
	ElapsedMS int64        `json:"elapsed_ms"`
}

// CheckRequest is what to check.
type CheckRequest struct {
	Settings Settings
	From     string // MAIL FROM address (the account's email)
	Rcpt     string // RCPT address; "" = From
	// TestRecipient, when set, adds the data step: a short real test
	// message sent to TestRecipient (instead of Rcpt).
	TestRecipient string
	Lang          string        // "en" or "ru"; an Accept-Language value works too
	Timeout       time.Duration // whole check bound; 0 = DefaultCheckTimeout
}

// Check runs every step up to rcpt (and data when asked), stops at the first
// failure, ends with RSET and QUIT, and returns the report. The whole check,
// QUIT included, is bounded by req.Timeout. The password appears in no field
// of the report.
func (n *Network) Check(ctx context.Context, req CheckRequest) Report {
	timeout := req.Timeout
	if timeout <= 0 {
		timeout = DefaultCheckTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	lang := i18n.Parse(req.Lang)

	rep := Report{Steps: []StepResult{}}
	tr := &tracer{lang: lang, log: n.Logger, host: req.Settings.Host, emit: func(r StepResult) {
		rep.Steps = append(rep.Steps, r)
	}}
	err := n.checkSteps(ctx, req, tr)

	var se *StepError
	switch {
	case errors.As(err, &se):
		rep.Failed = se.Step
	case err != nil && len(rep.Steps) > 0:
		rep.Failed = rep.Steps[len(rep.Steps)-1].Step
	}
	rep.OK = err == nil
	rep.ElapsedMS = time.Since(start).Milliseconds()
	scrubReport(&rep, tr.secrets)
	return rep
}

func (n *Network) checkSteps(ctx context.Context, req CheckRequest, tr *tracer) error {
	c, err := n.dial(ctx, req.Settings, tr)
	if err != nil {
		return err
	}
	defer func() {
		// QUIT within what is left of the check's bound.
		deadline, _ := ctx.Deadline()
		if ctx.Err() != nil {
			deadline = time.Now() // cancelled by the caller: no QUIT
		}
		_ = c.closeBy(deadline)
	}()

	if req.TestRecipient != "" {
		msg := testMessage(tr.lang, req.From, req.TestRecipient, req.Settings.Host, time.Now())
		_, err = c.send(ctx, req.From, []string{req.TestRecipient}, bytes.NewReader(msg), tr)
	} else {
		rcpt := req.Rcpt
		if rcpt == "" {
			rcpt = req.From
		}
		stop := context.AfterFunc(ctx, c.kill)
		err = c.mailFrom(ctx, req.From, []string{rcpt}, tr)
		if err == nil {
			err = c.rcptTo(ctx, req.From, []string{rcpt}, tr)
		}
		if !stop() {
			c.broken = true
		}
	}
	if !c.broken {
		_ = c.Reset(ctx)
	}
	return err
}

// testMessage is the short message of the data step: From, To, Subject,
// Date, Message-ID, and a text saying it is a mailsync test, in lang.
func testMessage(lang i18n.Lang, from, to, host string, now time.Time) []byte {
	domain := "mailsync.invalid"
	if at := strings.LastIndexByte(from, '@'); at >= 0 && at < len(from)-1 {
		domain = from[at+1:]
	}
	var id [12]byte
	_, _ = rand.Read(id[:])

	var b bytes.Buffer
	b.WriteString("From: <" + from + ">\r\n")
	b.WriteString("To: <" + to + ">\r\n")
	b.WriteString("Subject: " + mime.QEncoding.Encode("utf-8", i18n.T(lang, "check.test_subject")) + "\r\n")
	b.WriteString("Date: " + now.Format(time.RFC1123Z) + "\r\n")
	b.WriteString("Message-ID: <" + hex.EncodeToString(id[:]) + ".check@" + domain + ">\r\n")
	b.WriteString("MIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\n")
	b.WriteString("Content-Transfer-Encoding: quoted-printable\r\n")
	b.WriteString("Auto-Submitted: auto-generated\r\n")
	b.WriteString("\r\n")
	body := i18n.T(lang, "check.test_body", from, host, now.UTC().Format("2006-01-02 15:04:05 MST"))
	qp := quotedprintable.NewWriter(&b)
	_, _ = qp.Write([]byte(strings.ReplaceAll(body, "\n", "\r\n") + "\r\n"))
	_ = qp.Close()
	return b.Bytes()
}

// scrubReport removes the password from every text of the report, a last
// safety net behind the scrubbing of replies as they arrive.
func scrubReport(rep *Report, secrets []string) {
	if len(secrets) == 0 {
		return
	}
	for i := range rep.Steps {
		s := &rep.Steps[i]
		s.Reply = scrubReply(s.Reply, secrets)
		s.Detail = scrub(s.Detail, secrets)
		s.Explanation = scrub(s.Explanation, secrets)
		s.Hint = scrub(s.Hint, secrets)
	}
}
