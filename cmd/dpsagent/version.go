package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
)

// Set by the Makefile from the commit (not the clock), so builds are reproducible.
var (
	version   = "dev"
	buildDate = "" // RFC 3339, the commit's date
)

func (c *cli) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and build facts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			date := buildDate
			if date == "" {
				date = "unknown"
			}
			fmt.Fprintf(c.stdout, "dpsagent %s (built %s, %s, %s/%s)\n", version, date, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}
