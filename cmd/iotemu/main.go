// Command iotemu is a local emulator of Azure DPS, certificate issuance and IoT
// Hub, with a simulated TPM served over TCP, so dpsagent's whole lifecycle can
// be tested and shown on one machine with no Azure account.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := &cobra.Command{
		Use:           "iotemu",
		Short:         "A local emulator of Azure DPS, certificate issuance and IoT Hub",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(serveCommand(stdout, stderr), tpmCommand(stdout, stderr))
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(stderr, "iotemu: %v\n", err)
		return 1
	}
	return 0
}

func newLogger(w io.Writer) *zap.Logger {
	cfg := zap.NewDevelopmentEncoderConfig()
	cfg.EncodeLevel = zapcore.CapitalLevelEncoder
	cfg.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
	return zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(cfg), zapcore.AddSync(w), zapcore.InfoLevel))
}
