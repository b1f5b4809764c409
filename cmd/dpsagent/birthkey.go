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
			t, err := c.openTPM(spec)
			if err != nil {
				return err
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
			if err := writeFile(keyOut, k.Blob(), 0o600, false); err != nil {
				return withCode(exitFailure, fmt.Errorf("write key blob: %w", err))
			}
			pemCSR := keys.CSRPEM(der)
			if csrOut == "" || csrOut == "-" {
				_, err = c.stdout.Write(pemCSR)
				return err
			}
			if err := writeFile(csrOut, pemCSR, 0o644, true); err != nil {
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

// writeFile writes data atomically with mode perm: a temp file in the same
// directory, fsync, then rename (replace) or link (never replace, so a key file
// that appeared meanwhile is not lost), then fsync the directory.
func writeFile(path string, data []byte, perm os.FileMode, replace bool) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if replace {
		err = os.Rename(tmp, path)
	} else {
		err = os.Link(tmp, path)
	}
	if err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
