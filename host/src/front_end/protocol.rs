//! The conversation with the parent (the Nix that runs the hook) as Nix 2.x and Lix ≤ 2.93
//! speak it: the settings block, then `try` requests answered with `# accept` / `# decline` /
//! `# decline-permanently` / `# postpone` lines on stderr. No policy of its own: it only reads and writes.

use std::io::{Read, Write};

use anyhow::{bail, Context, Result};
use nwh_wire::{Limits, Reader};

use nwh_decision::Request;

/// The longest string the parent legitimately sends is a settings value (a `builders` line
/// list, say); anything near this bound is a corrupt stream, not a setting.
const MAX_STRING: u64 = 1 << 20;
const MAX_LIST: u64 = 1 << 20;

/// What the parent may send next.
#[derive(Debug, PartialEq)]
pub enum Message {
    /// A `try`, as the request it is: Nix does not say whether it could build the derivation
    /// itself (`could_build_locally` is false here; the scheduler works it out from the
    /// parent's settings). Boxed: with the local machine's facts a request is large, and an
    /// `End` need not be.
    Try(Box<Request>),
    /// End of input: the parent has no more questions.
    End,
}

/// The inputs and outputs Nix sends after `# accept`.
#[derive(Debug, PartialEq)]
pub struct Accepted {
    pub inputs: Vec<String>,
    pub wanted_outputs: Vec<String>,
}

pub struct Conversation<R: Read, W: Write> {
    input: Reader<R>,
    replies: W,
}

impl<R: Read, W: Write> Conversation<R, W> {
    pub fn new(input: R, replies: W) -> Self {
        Conversation {
            input: Reader::with_limits(input, Limits { max_string_len: MAX_STRING, max_list_len: MAX_LIST }),
            replies,
        }
    }

    /// The settings block: `1, name, value` records ended by `0`.
    pub fn read_settings(&mut self) -> Result<Vec<(String, String)>> {
        let mut settings = Vec::new();
        loop {
            match self.input.read_u64().context("reading the settings block from Nix")? {
                0 => return Ok(settings),
                1 => {
                    let name = self.input.read_string().context("reading a setting's name")?;
                    let value = self
                        .input
                        .read_string()
                        .with_context(|| format!("reading the value of setting '{name}'"))?;
                    settings.push((name, value));
                }
                n => {
                    bail!("the settings block from Nix holds a record marker {n}, where 0 or 1 was expected")
                }
            }
        }
    }

    pub fn next_message(&mut self) -> Result<Message> {
        let word = match self.input.read_string() {
            Ok(w) => w,
            // Nix hangs up between requests when it needs no more builds.
            Err(e) if e.is_clean_eof() => return Ok(Message::End),
            Err(e) => return Err(e).context("reading the next request from Nix"),
        };
        if word != "try" {
            bail!(
                "Nix sent the command '{}', but the only command of the build-hook protocol is 'try'",
                word.escape_debug()
            );
        }
        let am_willing = self.input.read_bool().context("reading amWilling of a 'try'")?;
        let system = self.input.read_string().context("reading the system of a 'try'")?;
        let drv_path = self.input.read_string().context("reading the derivation path of a 'try'")?;
        let required_features = self
            .input
            .read_string_list()
            .with_context(|| format!("reading the required features of {drv_path}"))?;
        Ok(Message::Try(Box::new(Request {
            drv_path,
            system,
            required_features,
            am_willing,
            could_build_locally: false,
            local: Default::default(),
        })))
    }

    pub fn read_accepted(&mut self) -> Result<Accepted> {
        let inputs =
            self.input.read_string_list().context("reading the input paths Nix sends after '# accept'")?;
        let wanted_outputs =
            self.input.read_string_list().context("reading the wanted outputs Nix sends after '# accept'")?;
        Ok(Accepted { inputs, wanted_outputs })
    }

    /// The machine line goes in the same write as `# accept`: Nix reads it raw as the next
    /// line, so nothing may come between them.
    pub fn accept(&mut self, machine: &str) -> Result<()> {
        self.reply(&format!("# accept\n{machine}\n"))
    }

    pub fn decline(&mut self) -> Result<()> {
        self.reply("# decline\n")
    }

    pub fn decline_permanently(&mut self) -> Result<()> {
        self.reply("# decline-permanently\n")
    }

    pub fn postpone(&mut self) -> Result<()> {
        self.reply("# postpone\n")
    }

    fn reply(&mut self, text: &str) -> Result<()> {
        self.replies.write_all(text.as_bytes()).context("writing a reply to Nix")?;
        self.replies.flush().context("writing a reply to Nix")
    }
}
