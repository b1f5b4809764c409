package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Exit codes are a contract with scripts and the systemd unit.
const (
	exitOK      = 0
	exitFailure = 1 // anything not listed below
	exitConfig  = 2 // bad configuration or usage
	exitTPM     = 3 // the TPM cannot be used
	exitRefused = 4 // the service refused (enrollment, credential, CSR)
	exitNetwork = 5 // network problem or timeout
)

// exitError carries the exit code for an error a command returns.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

// cli is what every command shares; there is no package-level state, so tests
// run the whole command tree in process.
type cli struct {
	stdout, stderr io.Writer
	verbose        bool
	logFormat      string
	getenv         func(string) string
}

// logger writes for whoever reads stderr: JSON when asked (--log-format
// json), journald's priority prefixes and no timestamps under systemd (the
// journal stamps and ranks lines itself), colours on a terminal, plain text
// otherwise. Secrets are never passed to it.
func (c *cli) logger() *zap.Logger {
	level := zapcore.InfoLevel
	if c.verbose {
		level = zapcore.DebugLevel
	}
	cfg := zap.NewDevelopmentEncoderConfig()
	cfg.TimeKey = ""
	cfg.EncodeLevel = zapcore.CapitalLevelEncoder
	var enc zapcore.Encoder
	switch {
	case c.logFormat == "json":
		jc := zap.NewProductionEncoderConfig()
		jc.EncodeTime = zapcore.RFC3339NanoTimeEncoder
		enc = zapcore.NewJSONEncoder(jc)
	case c.getenv("JOURNAL_STREAM") != "":
		cfg.EncodeLevel = journalPriority
		cfg.ConsoleSeparator = " "
		enc = zapcore.NewConsoleEncoder(cfg)
	default:
		if isTerminal(c.stderr) {
			cfg.EncodeLevel = zapcore.CapitalColorLevelEncoder
		}
		enc = zapcore.NewConsoleEncoder(cfg)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(c.stderr), level))
}

// journalPriority writes sd-daemon(3) prefixes, which journald turns into the
// line's priority.
func journalPriority(l zapcore.Level, enc zapcore.PrimitiveArrayEncoder) {
	p := "<6>"
	switch {
	case l >= zapcore.ErrorLevel:
		p = "<3>"
	case l == zapcore.WarnLevel:
		p = "<4>"
	case l == zapcore.DebugLevel:
		p = "<7>"
	}
	enc.AppendString(p)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr, getenv: os.Getenv}
	root := c.rootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "dpsagent: %v\n", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitConfig // cobra's own errors are usage errors
}

func (c *cli) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "dpsagent",
		Short:         "Keep this gateway's TPM-held X.509 identity for Azure IoT valid",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().BoolVarP(&c.verbose, "verbose", "v", false, "log debug details")
	root.PersistentFlags().StringVar(&c.logFormat, "log-format", "text", "text or json")
	root.AddCommand(c.versionCommand(), c.runCommand(), c.provisionCommand(), c.statusCommand(), c.checkCommand(), c.renewCommand(), c.resetCommand(), c.tpmCommand(), c.birthKeyCommand(), c.manCommand(), c.initCommand())
	return root
}
