package testpeer

import (
	"strings"
)

// HostileSMTP is a small SMTP responder for hostile scripts: by default it
// accepts everything (EHLO with STARTTLS when the peer has TLS, AUTH
// PLAIN and LOGIN, MAIL, RCPT, DATA, RSET, QUIT), and a row changes one
// answer with Handle or the fields.
type HostileSMTP struct {
	// Greeting is the first reply, CRLFs included; default
	// "220 hostile ESMTP\r\n".
	Greeting string
	// EHLO is the reply to EHLO, CRLFs included; default a 250 reply with
	// STARTTLS (when the peer has TLS and the session is not under TLS
	// yet), AUTH PLAIN LOGIN, 8BITMIME and SIZE.
	EHLO string
	// Handle, when set, sees every command line first (verb upper case,
	// the line as sent); it returns true when it answered (or broke the
	// connection) and the default must not. For DATA it is called with
	// verb "." once the message was read.
	Handle func(c *HostileConn, verb, line string) (bool, error)
}

// Serve is the HostileScript of the responder.
func (h *HostileSMTP) Serve(c *HostileConn) error {
	greeting := h.Greeting
	if greeting == "" {
		greeting = "220 hostile ESMTP\r\n"
	}
	if err := c.Write(greeting); err != nil {
		return err
	}
	for {
		line, err := c.ReadLine()
		if err != nil {
			return nil // the client hung up
		}
		verb, _, _ := strings.Cut(line, " ")
		verb = strings.ToUpper(verb)
		if verb == "MAIL" || verb == "RCPT" {
			verb, _, _ = strings.Cut(strings.ToUpper(line), ":")
		}
		if h.Handle != nil {
			done, err := h.Handle(c, verb, line)
			if err != nil {
				return err
			}
			if done {
				continue
			}
		}
		end, err := h.answer(c, verb, line)
		if err != nil || end {
			return err
		}
	}
}

func (h *HostileSMTP) ehlo(c *HostileConn) string {
	if h.EHLO != "" {
		return h.EHLO
	}
	r := "250-hostile greets you\r\n"
	if c.p.opts.TLS != nil && !c.tls {
		r += "250-STARTTLS\r\n"
	}
	return r + "250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250 SIZE 10485760\r\n"
}

func (h *HostileSMTP) answer(c *HostileConn, verb, line string) (end bool, err error) {
	switch verb {
	case "EHLO", "HELO":
		return false, c.Write(h.ehlo(c))
	case "STARTTLS":
		if c.p.opts.TLS == nil || c.tls {
			return false, c.Write("502 5.5.1 no STARTTLS here\r\n")
		}
		if err := c.Write("220 2.0.0 Ready to start TLS\r\n"); err != nil {
			return false, err
		}
		return false, c.StartTLS()
	case "AUTH":
		// PLAIN comes with its initial response; LOGIN asks twice.
		if strings.HasPrefix(strings.ToUpper(line), "AUTH LOGIN") {
			for _, prompt := range []string{"VXNlcm5hbWU6", "UGFzc3dvcmQ6"} {
				if len(strings.Fields(line)) == 3 && prompt == "VXNlcm5hbWU6" {
					continue // the user name came with the command
				}
				if err := c.Write("334 " + prompt + "\r\n"); err != nil {
					return false, err
				}
				if _, err := c.ReadLine(); err != nil {
					return true, nil
				}
			}
		}
		return false, c.Write("235 2.7.0 Authentication successful\r\n")
	case "MAIL FROM", "RCPT TO", "RSET", "NOOP":
		return false, c.Write("250 2.0.0 OK\r\n")
	case "DATA":
		if err := c.Write("354 End data with <CR><LF>.<CR><LF>\r\n"); err != nil {
			return false, err
		}
		if err := ReadSMTPData(c); err != nil {
			return true, nil
		}
		if h.Handle != nil {
			done, err := h.Handle(c, ".", ".")
			if err != nil || done {
				return false, err
			}
		}
		return false, c.Write("250 2.0.0 Queued\r\n")
	case "QUIT":
		_ = c.Write("221 2.0.0 Bye\r\n")
		return true, nil
	}
	return false, c.Write("500 5.5.2 unknown command\r\n")
}

// ReadSMTPData reads a message up to its final dot line.
func ReadSMTPData(c *HostileConn) error {
	for {
		line, err := c.ReadLine()
		if err != nil {
			return err
		}
		if line == "." {
			return nil
		}
	}
}
