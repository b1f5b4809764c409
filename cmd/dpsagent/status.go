package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/dpsagent/dpsagent/agent"
	"github.com/dpsagent/dpsagent/agent/store"
)

func (c *cli) statusCommand() *cobra.Command {
	var (
		path   string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show registration and certificate status in one place",
		Long: `Show where this device stands: registration, device and hub, certificate,
next renewal and the last error, with the hint to fix it. With the daemon
running the facts are live; without it they come from the state directory.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.loadConfig(path)
			if err != nil {
				return err
			}
			v, err := daemonStatus(cfg)
			if err != nil && !errors.Is(err, errNoDaemon) {
				// A daemon that cannot be asked is not a stopped one: the
				// state directory would say "not running".
				return withCode(exitFailure, err)
			}
			if err != nil {
				m, perr := store.Peek(cfg.Advanced.StateDir)
				if perr != nil {
					return withCode(exitFailure, perr)
				}
				v = offlineStatus(cfg, m, time.Now())
			}
			if asJSON {
				enc := json.NewEncoder(c.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(v)
			}
			renderStatus(c.stdout, v, time.Now())
			return nil
		},
	}
	c.configFlag(cmd, &path)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts (schema_version 1)")
	return cmd
}

// printable makes text that came from outside (a cloud's error message, a
// hub name, a file) safe to print on a terminal as one line: control
// characters, C1 included (U+009B acts as an escape on some terminals),
// become spaces and invalid UTF-8 becomes "?".
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
}

// renderStatus is the one screen an operator reads.
func renderStatus(w io.Writer, v statusView, now time.Time) {
	source := "live from the daemon"
	if v.Source != "daemon" {
		source = "from the state directory; the daemon is not running"
	}
	fmt.Fprintf(w, "dpsagent: %s (%s)\n\n", stateSentence(v), source)
	t := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	section := func(name string) { fmt.Fprintf(t, "%s\n", name) }
	row := func(k, format string, args ...any) {
		fmt.Fprintf(t, "  %s\t%s\n", k, printable(fmt.Sprintf(format, args...)))
	}

	section("Registration")
	row("ID scope", "%s", orUnknown(v.IDScope))
	row("Registration ID", "%s", v.RegistrationID)
	if r := v.Registration; r != nil {
		line := orUnknown(r.Status)
		if r.Substatus != nil {
			line += " (" + *r.Substatus + ")"
		}
		if r.At != nil {
			line += ", " + when(*r.At, now)
		}
		row("Last registration", "%s", line)
	} else {
		row("Last registration", "none yet")
	}
	section("Device")
	row("Device ID", "%s", orUnknown(v.DeviceID))
	row("Hub", "%s", orUnknown(v.AssignedHub))
	switch {
	case v.Connected && v.ConnectedSince != nil:
		row("Connection", "connected since %s", when(*v.ConnectedSince, now))
	case v.Connected:
		row("Connection", "connected")
	default:
		row("Connection", "not connected")
	}
	section("Certificate")
	if c := v.Certificate; c != nil {
		if c.Subject != "" {
			row("Subject", "%s", c.Subject)
			row("Issuer", "%s", c.Issuer)
		}
		row("Serial", "%s", c.Serial)
		row("Valid", "%s to %s (%s)", stamp(c.NotBefore), stamp(c.NotAfter), timeLeft(c.NotAfter, now))
		storage := "in the TPM"
		if c.KeyStorage != "tpm" {
			storage = "in a file (software key)"
		}
		row("Key", "%s, %s", c.KeyAlgorithm, storage)
	} else if v.Identity == IdentitySAS {
		row("Identity", "symmetric key (identity: sas, the legacy mode; x509 is the goal)")
	} else {
		row("Identity", "no certificate yet")
	}
	section("Renewal")
	if v.NextRenewal != nil {
		row("Next", "%s: %s", when(*v.NextRenewal, now), orUnknown(v.NextRenewalReason))
	} else {
		row("Next", "not scheduled")
	}
	if r := v.LastRenewal; r != nil {
		via := ""
		if r.Path != nil {
			via = " via " + *r.Path
		}
		row("Last", "%s, %s%s", r.Result, when(r.At, now), via)
	}
	section("Last error")
	if e := v.LastError; e != nil {
		row("What", "%s", e.Message)
		row("When", "%s", when(e.At, now))
		if e.Hint != nil {
			row("What to do", "%s", *e.Hint)
		}
	} else {
		fmt.Fprintf(t, "  none\n")
	}
	_ = t.Flush()
}

func stateSentence(v statusView) string {
	switch v.State {
	case agent.StateConnected:
		return "connected"
	case agent.StateUnprovisioned:
		return "not provisioned yet"
	case agent.StateWaitingForClock:
		return "waiting for the clock to be set"
	case agent.StateError:
		return "needs attention"
	}
	return strings.ReplaceAll(string(v.State), "_", " ")
}

func orUnknown(s *string) string {
	if s == nil {
		return "unknown"
	}
	return *s
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 MST") }

// when is an absolute UTC time with how far it is from now.
func when(t, now time.Time) string {
	d := t.Sub(now)
	switch {
	case d > time.Minute:
		return stamp(t) + " (in " + approx(d) + ")"
	case d < -time.Minute:
		return stamp(t) + " (" + approx(-d) + " ago)"
	case d >= time.Second:
		return stamp(t) + " (in " + approx(d) + ")"
	case d <= -time.Second:
		return stamp(t) + " (" + approx(-d) + " ago)"
	}
	return stamp(t) + " (now)"
}

func timeLeft(notAfter, now time.Time) string {
	d := notAfter.Sub(now)
	if d <= 0 {
		return "expired " + approx(-d) + " ago"
	}
	return approx(d) + " left"
}

// approx rounds a duration the way people say it.
func approx(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%d days", int(d.Hours()/24))
	case d >= 2*time.Hour:
		return fmt.Sprintf("%d hours", int(d.Hours()))
	case d >= 2*time.Minute:
		return fmt.Sprintf("%d minutes", int(d.Minutes()))
	}
	return fmt.Sprintf("%d seconds", int(d.Seconds()))
}

func (c *cli) renewCommand() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "renew",
		Short: "Ask the running daemon to renew the certificate now",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.loadConfig(path)
			if err != nil {
				return err
			}
			if err := daemonRenew(cfg); err != nil {
				if errors.Is(err, errNoDaemon) {
					return withCode(exitFailure, fmt.Errorf("%w: renewal happens in the daemon; start it (systemctl start dpsagent) — or `systemctl reload dpsagent` does the same as this command", err))
				}
				return withCode(exitFailure, err)
			}
			fmt.Fprintln(c.stdout, "Renewal requested; follow it with `dpsagent status` or `journalctl -u dpsagent -f`.")
			return nil
		},
	}
	c.configFlag(cmd, &path)
	return cmd
}

func (c *cli) resetCommand() *cobra.Command {
	var (
		path string
		yes  bool
	)
	cmd := &cobra.Command{
		Use:   "reset",
		Short: "Forget this device's identity so it provisions afresh (keeps the configuration)",
		Long: `Remove the agent's keys and certificates from the state directory, so that the
next start registers with DPS again for a new key. The configuration and the
onboarding credential stay. Stop the daemon first.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.loadConfig(path)
			if err != nil {
				return err
			}
			if !yes {
				fmt.Fprintf(c.stdout, "This removes the identity in %s; the device will register with DPS again. Type yes to go on: ", cfg.Advanced.StateDir)
				var answer string
				_, _ = fmt.Fscanln(cmd.InOrStdin(), &answer)
				if strings.TrimSpace(strings.ToLower(answer)) != "yes" {
					return withCode(exitFailure, errors.New("reset cancelled: nothing was changed"))
				}
			}
			st, err := store.Open(cfg.Advanced.StateDir, store.Options{Logger: c.logger()})
			if errors.Is(err, store.ErrLocked) {
				return withCode(exitFailure, fmt.Errorf("%w\nstop the daemon first: systemctl stop dpsagent", err))
			}
			if err != nil {
				return withCode(exitFailure, err)
			}
			defer st.Close()
			if err := st.Reset(); err != nil {
				return withCode(exitFailure, err)
			}
			fmt.Fprintln(c.stdout, "Reset: the identity is gone; the configuration and onboarding credential are kept. Start the daemon to provision afresh.")
			return nil
		},
	}
	c.configFlag(cmd, &path)
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}
