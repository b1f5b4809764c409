package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/dpsagent/dpsagent/tpm"
)

func (c *cli) tpmCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "tpm", Short: "Inspect the TPM"}
	var spec string
	var asJSON bool
	info := &cobra.Command{
		Use:   "info",
		Short: "Show the TPM's maker, firmware and the key algorithms it supports",
		Long: `Show what dpsagent needs to know about the TPM: who made it, its firmware,
which key algorithms and curves it supports, which one "auto" would pick, and
whether the standard storage root key is persisted at 0x81000002.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := c.openTPM(spec)
			if err != nil {
				return err
			}
			defer t.Close()
			in, err := t.Info()
			if err != nil {
				return withCode(exitTPM, fmt.Errorf("read TPM %s: %w", t.Spec(), err))
			}
			if asJSON {
				enc := json.NewEncoder(c.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(in)
			}
			c.printTPMInfo(in)
			return nil
		},
	}
	info.Flags().StringVar(&spec, "tpm", tpm.DefaultDevice, "the TPM: a device path, unix:PATH or tcp:HOST:PORT")
	info.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	cmd.AddCommand(info)
	return cmd
}

// openTPM opens the TPM, telling a mistyped TPM string (a usage error) from a
// TPM that cannot be used.
func (c *cli) openTPM(spec string) (*tpm.TPM, error) {
	t, err := tpm.Open(spec, tpm.Options{Logger: c.logger()})
	switch {
	case errors.Is(err, tpm.ErrBadSpec):
		return nil, withCode(exitConfig, fmt.Errorf("--tpm: %w", err))
	case err != nil:
		return nil, withCode(exitTPM, err)
	}
	return t, nil
}

func (c *cli) printTPMInfo(in *tpm.Info) {
	w := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	algs := make([]string, len(in.KeyAlgorithms))
	for i, a := range in.KeyAlgorithms {
		algs[i] = string(a)
	}
	srk := "not persisted: the agent derives it from the standard template (same key, about 100 ms more per start)"
	switch {
	case in.PersistentSRKInUse:
		srk = "persisted at 0x81000002 (standard ECC template): used"
	case in.PersistentSRK:
		srk = "0x81000002 holds a key of another template: left alone, the agent derives its own"
	}
	fmt.Fprintf(w, "TPM\t%s\n", in.Spec)
	fmt.Fprintf(w, "Manufacturer\t%s %s\n", in.Manufacturer, in.VendorString)
	fmt.Fprintf(w, "Firmware\t%s\n", in.FirmwareVersion)
	fmt.Fprintf(w, "Specification\tTPM 2.0 revision %s (%d)\n", in.SpecRevision, in.SpecYear)
	fmt.Fprintf(w, "Key algorithms\t%s\n", strings.Join(algs, ", "))
	fmt.Fprintf(w, "ECC curves\t%s\n", strings.Join(in.ECCCurves, ", "))
	fmt.Fprintf(w, "auto picks\t%s\n", in.AutoAlgorithm)
	fmt.Fprintf(w, "Object slots\t%d\n", in.TransientSlots)
	fmt.Fprintf(w, "Storage root key\t%s\n", srk)
	_ = w.Flush()
}
