// Command mailsync runs the mailsync service and its administration
// commands. See "mailsync help".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// env is how the program reads its environment; tests pass their own.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
}

const usage = `mailsync: mail through real mail servers for a company portal.

Usage:
  mailsync serve [flags]          run the HTTP API and background workers
  mailsync migrate [flags]        apply database migrations and exit
  mailsync user add --email E --name N [--admin]
                                  add a user and print its first API token
  mailsync user token --email E   issue another API token for a user
  mailsync user list              list users
  mailsync rotate-key --new-key-file F
                                  re-seal every stored secret with a new key
  mailsync sendmail [-t] [-i] [-f from] [recipient ...]
                                  submit a message read on standard input, like sendmail
  mailsync version                print the version

Run "mailsync COMMAND -help" for the settings of a command.
`

// run executes one command and returns the process exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	e := env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = cmdServe(ctx, e, args[1:])
	case "migrate":
		err = cmdMigrate(ctx, e, args[1:])
	case "user":
		err = cmdUser(ctx, e, args[1:])
	case "rotate-key":
		err = cmdRotateKey(ctx, e, args[1:])
	case "sendmail":
		return cmdSendmail(ctx, e, args[1:])
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "mailsync", version)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "mailsync: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintln(stderr, "mailsync:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "mailsync:", err)
		return 1
	}
}

// usageError is a mistake in the command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }
