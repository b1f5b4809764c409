package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/dpsagent/dpsagent/agent"
)

func (c *cli) configFlag(cmd *cobra.Command, path *string) {
	cmd.Flags().StringVarP(path, "config", "c", DefaultConfigFile, "configuration file")
}

func (c *cli) loadConfig(path string) (*Config, error) {
	cfg, err := loadConfig(path, os.Environ())
	if err != nil {
		return nil, withCode(exitConfig, err)
	}
	return cfg, nil
}

func (c *cli) runCommand() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the daemon: provision when needed, stay connected, renew before expiry",
		Long: `Run the agent until it is stopped. With no identity it registers with DPS and
asks for a certificate for a new TPM key; with one it connects straight to its
hub. It renews before the certificate expires. SIGHUP asks for a renewal now;
SIGTERM stops it cleanly.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.loadConfig(path)
			if err != nil {
				return err
			}
			log := c.logger()
			notify := newNotifier(os.Getenv)
			m := newMetrics()
			d, err := c.wire(cfg, log, func(s agent.Status) {
				notify.status(s)
				m.observe(s)
			})
			if err != nil {
				return err
			}
			defer d.Close()
			if cfg.Advanced.MetricsListen != "" {
				stop, err := serveMetrics(cfg.Advanced.MetricsListen, m, log)
				if err != nil {
					return withCode(exitConfig, err)
				}
				defer stop()
			}
			d.agent.SetHeartbeat(notify.ping)
			stopAPI, err := serveLocalAPI(cmd.Context(), cfg, d, log)
			if err != nil {
				return withCode(exitFailure, err)
			}
			defer stopAPI()
			notify.ready()
			defer notify.stopping()
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			ctx := cmd.Context()
			go func() {
				for {
					select {
					case <-ctx.Done():
						return
					case <-hup:
						d.agent.Renew()
					}
				}
			}()
			return d.agent.Run(ctx)
		},
	}
	c.configFlag(cmd, &path)
	return cmd
}

func (c *cli) provisionCommand() *cobra.Command {
	var (
		path    string
		force   bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "provision",
		Short: "Provision in the foreground, step by step, and say how it went",
		Long: `Do once, in the foreground, what the daemon does first: register with DPS with
a CSR for a new TPM key (unless a valid identity exists), check and store the
issued certificate, and connect to the assigned hub.

Exit codes: 0 provisioned and connected; 2 bad configuration; 3 TPM problem;
4 refused by the service (enrollment, credential, CSR); 5 network or timeout.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.loadConfig(path)
			if err != nil {
				return err
			}
			log, finish := c.stepLogger()
			d, err := c.wire(cfg, log, nil)
			if err != nil {
				finish(false)
				return err
			}
			defer d.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			st, err := d.agent.Provision(ctx, force)
			finish(err == nil)
			if err != nil {
				code := provisionExitCode(ctx, err)
				if h := agent.Hint(err); h != "" {
					// Say what failed, then what to do, each once: the
					// cloud errors end their text with the hint.
					msg := strings.TrimSuffix(strings.TrimSuffix(err.Error(), h), "; ")
					err = fmt.Errorf("%s\nhint: %s", msg, strings.TrimSuffix(h, "; the agent retries"))
				}
				return withCode(code, err)
			}
			if st.Certificate == nil {
				fmt.Fprintf(c.stdout, "Provisioned: device %s on hub %s, with the symmetric key (identity: sas, the legacy mode).\n", st.DeviceID, st.AssignedHub)
				return nil
			}
			fmt.Fprintf(c.stdout, "Provisioned: device %s on hub %s, certificate %s valid until %s (%s key in %s).\n",
				st.DeviceID, st.AssignedHub, st.Certificate.Serial, st.Certificate.NotAfter.Format(time.RFC3339),
				st.Certificate.KeyAlgorithm, st.Certificate.KeyStorage)
			return nil
		},
	}
	c.configFlag(cmd, &path)
	cmd.Flags().BoolVar(&force, "force", false, "register anew even when a valid identity exists")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "give up after this long")
	return cmd
}

// provisionExitCode maps a provisioning failure to the documented exit codes.
func provisionExitCode(ctx context.Context, err error) int {
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, agent.ErrKeys):
		return exitTPM
	case ctx.Err() != nil, agent.Retryable(err):
		return exitNetwork
	}
	return exitRefused
}
