// Package wordpiece is a BERT uncased WordPiece tokenizer that produces the
// same token ids as HF transformers' slow BertTokenizer(do_lower_case=True)
// given the same vocab.txt. Adapters trained on these ids are loaded by HF
// PEFT users, so matching HF id for id matters more than anything else here.
//
// The pipeline is HF's, step by step:
//
//  1. The special tokens [PAD], [UNK], [CLS], [SEP] and [MASK], written
//     literally and in exactly that case anywhere in the text, are kept as
//     single tokens (HF lowercases everything else character by character,
//     then splits on them). The text between them is tokenized on its own, so
//     "a[SEP]b" is three tokens. "[sep]" is not special.
//  2. clean_text: U+0000, U+FFFD and every character whose Unicode category
//     starts with "C" (Cc, Cf, Co, Cs and unassigned Cn; U+200B and U+FEFF are
//     Cf) are dropped, except tab, newline and carriage return, which count as
//     whitespace with the space and category Zs (U+00A0 among them). Invalid
//     UTF-8 bytes decode to U+FFFD and are dropped too.
//  3. Every CJK ideograph (HF's eight ranges) becomes a word of its own.
//  4. The text is split on whitespace, which in Python's str.split also
//     includes U+2028 and U+2029; each word is lowercased, put in NFD and
//     stripped of category Mn, then split so that every punctuation character
//     (ASCII 33-47, 58-64, 91-96, 123-126 and every category P*) is a token.
//  5. WordPiece: a token longer than 100 characters is [UNK]; otherwise the
//     longest vocabulary prefix is taken greedily from the left, later pieces
//     prefixed "##", and if some position matches nothing the whole token is a
//     single [UNK].
//  6. Encode wraps the ids in [CLS] ... [SEP], keeping the first maxLen-2
//     word pieces.
//
// Why not github.com/sugarme/tokenizer: its BERT normalizer's accent stripping
// is broken ("café naïve résumé" gives [UNK] [UNK] [UNK] where HF gives
// "cafe naive resume"), and bending its NormalizedString API costs more than
// HF's ~150-line algorithm, which this package restates.
//
// Where the result can still differ from HF, all in characters that do not
// occur in the project's data:
//
//   - Unicode versions. Categories, case mappings and NFD come from Go's
//     unicode package and golang.org/x/text (both Unicode 15.0.0); HF uses the
//     unicodedata of whichever Python runs it (3.11: 14.0.0, 3.12: 15.0.0,
//     3.13: 15.1.0). A character assigned in one version and not the other is
//     dropped (category Cn) on one side only.
//   - Python lowercases U+0130 (İ) to "i" + U+0307; Go gives "i". Accent
//     stripping then removes U+0307, so the tokens agree.
//   - golang.org/x/text inserts U+034F after 30 consecutive non-starters
//     (UAX #15 stream-safe format), which can change the canonical order of
//     marks that follow. U+034F and almost every mark are Mn and stripped; the
//     order of what remains could differ only for runs of over 30 marks that
//     include non-Mn marks with a non-zero combining class.
//
// testdata/hf_reference.py is a Python port of HF's algorithm (not HF itself,
// which the development machines do not have); testdata/golden.json holds its
// ids for tricky strings under bert-base-uncased's vocabulary, which the tests
// compare against. Set WORDPIECE_REFERENCE to another file of its output to
// compare more: every statement of combined-val.csv, 20,000 random strings
// and every code point Python 3.11 assigns (as "Q<c>Q <c><C> e<c>") agreed.
//
// A Tokenizer is immutable after Load or New and safe for concurrent use.
package wordpiece
