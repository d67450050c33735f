package mailbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/emersion/go-imap/v2"
)

// The clear-text part of a starttls connection (RFC 3501 6.2.1, RFC 2595)
// is run here by hand rather than by imapclient.NewStartTLS, for three
// reasons:
//
//   - Injection (the STARTTLS class of CVE-2011-0411 and its client-side
//     kin): bytes the server (or a man in the middle) sends after the
//     tagged OK and before the handshake must not be read as responses
//     once TLS is up. They are not: any byte buffered after the OK line
//     refuses the connection with ErrSTARTTLSInjection.
//   - PREAUTH: a server that greets with PREAUTH cannot be upgraded (the
//     session is authenticated in clear text); the connection is refused
//     before STARTTLS is even sent.
//   - Bounds: every clear-text line is bounded (clearLineMax), and after
//     the handshake imapConn wraps the TLS connection, so the response
//     bound applies to the clear text of the whole session (imapclient
//     would keep the TLS connection to itself).
//
// imapclient then starts on the TLS connection with a greeting made up
// here, an untagged OK without capabilities, so that it asks for them
// again under TLS as RFC 3501 requires.

// Errors of the starttls step (test with errors.Is).
var (
	// ErrSTARTTLSInjection: the server sent more after its STARTTLS
	// reply, before the TLS handshake. Nothing of it was read as a
	// response; the connection was closed.
	ErrSTARTTLSInjection = errors.New("the server sent data after its STARTTLS reply, before the TLS handshake (a possible response injection); refused")
	// ErrPreauthClearText: the greeting was PREAUTH on a connection that
	// had to be upgraded with STARTTLS; nothing was sent.
	ErrPreauthClearText = errors.New("the server sent PREAUTH on a clear-text connection, which cannot be upgraded to TLS; refused")
)

const (
	// clearLineMax bounds a clear-text line (the greeting, the STARTTLS
	// reply and any untagged response before it).
	clearLineMax = 64 << 10
	// clearMax bounds all the clear text before the handshake.
	clearMax = 256 << 10
	// startTLSTag tags the STARTTLS command.
	startTLSTag = "S1"
)

// tlsGreeting is the greeting imapclient reads once TLS is up.
const tlsGreeting = "* OK TLS is up\r\n"

// clearText reads the clear-text part of a starttls connection.
type clearText struct {
	br   *bufio.Reader
	w    io.Writer
	read int
}

func newClearText(c net.Conn) *clearText {
	return &clearText{br: bufio.NewReaderSize(c, 4096), w: c}
}

// readLine returns the next line without its line break; complete is
// false when the connection ended (or failed) inside it.
func (ct *clearText) readLine() (line string, complete bool, err error) {
	var b []byte
	for {
		chunk, isPrefix, err := ct.br.ReadLine()
		b = append(b, chunk...)
		ct.read += len(chunk)
		if err != nil {
			return string(b), false, err
		}
		if len(b) > clearLineMax || ct.read > clearMax {
			return string(b[:min(len(b), maxGreetingLen)]), false, fmt.Errorf("%w (a clear-text line over %d KiB)", ErrResponseTooLong, clearLineMax>>10)
		}
		if !isPrefix {
			return string(b), true, nil
		}
	}
}

// startTLS sends STARTTLS and reads up to its tagged reply. It returns nil
// when the server said OK and sent nothing after it; an *imap.Error when
// it refused; another error when the connection failed or the server
// broke the protocol.
func (ct *clearText) startTLS() error {
	if _, err := io.WriteString(ct.w, startTLSTag+" STARTTLS\r\n"); err != nil {
		return err
	}
	for {
		line, _, err := ct.readLine()
		if err != nil {
			return err
		}
		if strings.HasPrefix(line, "* ") {
			continue // untagged data (CAPABILITY…) before the reply
		}
		tag, rest, _ := strings.Cut(line, " ")
		if tag != startTLSTag {
			return fmt.Errorf("%w: unexpected reply to STARTTLS: %q", ErrNotIMAP, clipIMAP(line, 80))
		}
		status, text, _ := strings.Cut(rest, " ")
		switch typ := imap.StatusResponseType(strings.ToUpper(status)); typ {
		case imap.StatusResponseTypeOK:
			if ct.br.Buffered() > 0 {
				return ErrSTARTTLSInjection
			}
			return nil
		case imap.StatusResponseTypeNo, imap.StatusResponseTypeBad:
			e := &imap.Error{Type: typ, Text: text}
			if code, after, ok := strings.Cut(text, "]"); ok && strings.HasPrefix(code, "[") {
				name, _, _ := strings.Cut(code[1:], " ")
				e.Code, e.Text = imap.ResponseCode(strings.ToUpper(name)), strings.TrimSpace(after)
			}
			return e
		default:
			return fmt.Errorf("%w: unexpected reply to STARTTLS: %q", ErrNotIMAP, clipIMAP(line, 80))
		}
	}
}

// isPreauth reports whether a greeting is PREAUTH.
func isPreauth(line string) bool {
	return bytes.HasPrefix(bytes.ToUpper([]byte(line)), []byte("* PREAUTH"))
}
