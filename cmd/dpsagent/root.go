package main

import (
	"context"
	"errors"
	"fmt"
	"io"

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
}

func (c *cli) logger() *zap.Logger {
	cfg := zap.NewDevelopmentEncoderConfig()
	cfg.TimeKey = "" // journald and terminals add their own time
	cfg.EncodeLevel = zapcore.CapitalLevelEncoder
	if isTerminal(c.stderr) {
		cfg.EncodeLevel = zapcore.CapitalColorLevelEncoder
	}
	level := zapcore.InfoLevel
	if c.verbose {
		level = zapcore.DebugLevel
	}
	core := zapcore.NewCore(zapcore.NewConsoleEncoder(cfg), zapcore.AddSync(c.stderr), level)
	return zap.New(core)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr}
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
	root.AddCommand(c.versionCommand(), c.runCommand(), c.provisionCommand(), c.statusCommand(), c.checkCommand(), c.renewCommand(), c.resetCommand(), c.tpmCommand(), c.birthKeyCommand())
	return root
}
