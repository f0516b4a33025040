//! `roentgen tokenize`: a prompt's token ids, as the model's tokenizer makes them.

use std::path::PathBuf;

use anyhow::Result;

#[derive(clap::Args)]
pub struct TokenizeArgs {
    /// A diffusers folder or ORG/NAME[@REVISION] (see `generate --model`).
    #[arg(long)]
    model: PathBuf,
    text: String,
    /// Print the ids the text encoder sees (padded and truncated to the tokenizer's
    /// length: 77 for CLIP, 128 for BERT's WordPiece).
    #[arg(long)]
    padded: bool,
}

pub async fn tokenize(a: TokenizeArgs) -> Result<()> {
    let tok = crate::open(&a.model, false)?.tokenizer().await?;
    let enc = tok.encode(&a.text)?;
    if let Some(d) = &enc.dropped {
        eprintln!(
            "warning: the prompt is longer than {} tokens; the text encoder never sees: {d}",
            tok.max_length()
        );
    }
    let ids = if a.padded {
        enc.ids
    } else {
        tok.encode_unpadded(&a.text)?
    };
    println!("{}", serde_json::to_string(&ids)?);
    Ok(())
}
