package main

import (
	"fmt"
	"io"
	"net"

	"github.com/spf13/cobra"

	"github.com/dpsagent/dpsagent/emulator/tpmserver"
)

func tpmCommand(stdout, stderr io.Writer) *cobra.Command {
	var listen, state string
	cmd := &cobra.Command{
		Use:   "tpm",
		Short: "Serve a simulated TPM over TCP (plain TPM commands, as swtpm's server port)",
		Long: `Serve the TCG reference TPM simulator on a TCP port, so dpsagent can use it as
--tpm tcp:HOST:PORT with nothing else installed. With --state, the simulator's
seed is kept in that directory, so keys created in one run load in the next.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLogger(stderr)
			sim, err := tpmserver.OpenSimulator(state)
			if err != nil {
				return err
			}
			defer sim.Close()
			l, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("listen for TPM clients on %s: %w", listen, err)
			}
			fmt.Fprintf(stdout, "ready: simulated TPM on tcp:%s\n", l.Addr())
			return tpmserver.New(sim, log).Serve(cmd.Context(), l)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:2321", "address to serve the TPM on")
	cmd.Flags().StringVar(&state, "state", "", "directory that keeps the TPM's seed across restarts (default: a new TPM each start)")
	return cmd
}
