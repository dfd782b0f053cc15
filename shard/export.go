package shard

import (
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
)

// WriteCSV writes rows of ds in the Kaggle layout (header ",statement,status";
// the first column is the row's original index when the source had one, else
// its position), quoting as RFC 4180 requires. Read reads the result back to
// the same statements and labels.
func WriteCSV(w io.Writer, ds *Dataset, rows []int) error {
	cw := csv.NewWriter(w)
	if err := cw.Write([]string{"", "statement", "status"}); err != nil {
		return err
	}
	for _, r := range rows {
		row := ds.Rows[r]
		idx := row.Index
		if idx == "" {
			idx = strconv.Itoa(r)
		}
		if err := cw.Write([]string{idx, row.Statement, row.Label.String()}); err != nil {
			return fmt.Errorf("writing row %d: %w", r, err)
		}
	}
	cw.Flush()
	return cw.Error()
}
