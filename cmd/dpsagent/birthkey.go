package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/dpsagent/dpsagent/tpm"
	"github.com/dpsagent/dpsagent/tpm/keys"
)

func (c *cli) birthKeyCommand() *cobra.Command {
	var spec, regID, keyOut, csrOut, alg string
	cmd := &cobra.Command{
		Use:   "birth-key",
		Short: "Create an onboarding key in the TPM and write its CSR for a manufacturer's CA",
		Long: `Create the key of an X.509 birth certificate inside the TPM. The key blob
(usable only by this TPM) goes to --key-out; the certificate signing request goes
to --out (or stdout) for your manufacturing CA to sign. Name the blob in the
configuration as onboarding.x509.key: tpm-blob:PATH.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if regID == "" {
				return withCode(exitConfig, errors.New("--registration-id is required: the CSR's common name must be the DPS registration ID"))
			}
			a, err := keys.ParseAlgorithm(alg)
			if err != nil {
				return withCode(exitConfig, fmt.Errorf("--algorithm: %w", err))
			}
			if _, err := os.Stat(keyOut); err == nil {
				return withCode(exitConfig, fmt.Errorf("%s already exists: it may hold the key of an issued birth certificate; choose another --key-out or remove it first", keyOut))
			}
			t, err := tpm.Open(spec, tpm.Options{Logger: c.logger()})
			if err != nil {
				return withCode(exitTPM, err)
			}
			defer t.Close()
			k, err := t.CreateKey(a)
			if err != nil {
				return withCode(exitTPM, err)
			}
			der, err := keys.NewCSR(k, regID)
			if err != nil {
				return withCode(exitTPM, err)
			}
			if err := writeNewFile(keyOut, k.Blob(), 0o600); err != nil {
				return withCode(exitFailure, fmt.Errorf("write key blob: %w", err))
			}
			pemCSR := keys.CSRPEM(der)
			if csrOut == "" || csrOut == "-" {
				_, err = c.stdout.Write(pemCSR)
				return err
			}
			if err := writeNewFile(csrOut, pemCSR, 0o644); err != nil {
				return withCode(exitFailure, fmt.Errorf("write CSR: %w", err))
			}
			fmt.Fprintf(c.stderr, "Created a %s key in the TPM (blob: %s) and its CSR for %q: %s\n", k.Algorithm(), keyOut, regID, csrOut)
			return nil
		},
	}
	cmd.Flags().StringVar(&spec, "tpm", tpm.DefaultDevice, "the TPM: a device path, unix:PATH or tcp:HOST:PORT")
	cmd.Flags().StringVar(&regID, "registration-id", "", "the DPS registration ID (the CSR's common name)")
	cmd.Flags().StringVar(&keyOut, "key-out", "birth-key.tpm", "where to write the key blob")
	cmd.Flags().StringVar(&csrOut, "out", "-", "where to write the CSR (PEM); - for stdout")
	cmd.Flags().StringVar(&alg, "algorithm", "auto", "auto, ecdsa-p256, ecdsa-p384 or rsa-2048")
	return cmd
}

// writeNewFile writes data atomically (temp file, fsync, rename) with mode perm.
func writeNewFile(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
