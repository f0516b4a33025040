//! The page's workbench: an init image (dropped or chosen: PNG and DICOM read by
//! `crate::image_in`, JPEG and the rest by the browser's own decoder) fitted to the
//! chosen size, a mask painted over it with the pointer (or read from a file), the
//! strength; RadEdit's edit with its two masks (the edit mask, white, and the keep
//! mask, blue: two canvases over the image, the pointer paints the chosen one), skip
//! ratio and inversion prompt; per-word
//! attention maps shown over the result at a click; the prompt builder; the DICOM
//! download; and Compare (two results side by side with their settings). What the
//! workbench decides by (the family, the mode, the ticked findings) is in
//! [`super::PageState`]; this keeps its data (pixels, maps, object URLs) and draws.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use gloo_events::EventListener;
use js_sys::{Array, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Blob, BlobPropertyBag, CanvasRenderingContext2d, Element, HtmlAnchorElement, HtmlButtonElement,
    HtmlCanvasElement, HtmlElement, HtmlImageElement, HtmlInputElement, HtmlSelectElement,
    ImageBitmap, ImageData, PointerEvent, Url,
};

use super::{Page, on_click, page};
use crate::findings::Style;
use crate::findings::{self, LABELS};
use crate::generation::Family;
use crate::image_io::ImageMetadata;
use crate::web::page_state::{
    CheckedFinding, EditMethod, Event, FormRecipe, Layer, Mode, PromptForm, parse_edit,
    parse_radedit, recipe_changes, sentence,
};
use crate::web::protocol::Settings;
use crate::word_maps::WordMaps;

/// The mask canvases' resolution (a mask is resampled to the image size on use).
const MASK_SIDE: u32 = 512;

/// A mask layer's canvas and the colour it is painted in (the keep mask's blue is told
/// from the edit mask's white at a glance; only the alpha is read back).
fn layer_canvas(layer: Layer) -> (&'static str, &'static str) {
    match layer {
        Layer::Edit => ("mask-canvas", "#ffffff"),
        Layer::Keep => ("keep-canvas", "#3b82f6"),
    }
}

/// A decoded init image at its own size.
struct Source {
    name: String,
    width: usize,
    height: usize,
    rgb: Vec<f32>,
}

/// A result shown: gray pixels, width, height, its PNG's URL.
type Shown = (Vec<u8>, usize, usize, String);

/// The workbench's data (its state is `PageState::workbench`).
#[derive(Default)]
pub(super) struct Workbench {
    source: RefCell<Option<Source>>,
    /// The pointer is held down on the mask (a gesture, not state the page decides by).
    painting: Cell<bool>,
    /// The last result, for the word overlays and Compare.
    result: RefCell<Option<Shown>>,
    /// The maps and the image's metadata (each overlay carries it).
    maps: RefCell<Option<(WordMaps, ImageMetadata)>>,
    overlay_url: RefCell<Option<String>>,
    dicom_url: RefCell<Option<String>>,
    pinned: RefCell<Option<(String, String)>>,
}

fn blob_url(bytes: &[u8], mime: &str) -> Option<String> {
    let parts = Array::of1(&Uint8Array::from(bytes));
    let opts = BlobPropertyBag::new();
    opts.set_type(mime);
    let blob = Blob::new_with_u8_array_sequence_and_options(&parts, &opts).ok()?;
    Url::create_object_url_with_blob(&blob).ok()
}

fn ctx(canvas: &HtmlCanvasElement) -> Option<CanvasRenderingContext2d> {
    canvas
        .get_context("2d")
        .ok()
        .flatten()
        .map(|c| c.unchecked_into())
}

/// Reads a chosen or dropped file: PNG and DICOM by our readers (16 bits and DICOM
/// windowing kept), anything else by the browser's decoder.
async fn decode_file(file: web_sys::File) -> Result<Source, String> {
    let name = file.name();
    let buf = JsFuture::from(file.array_buffer())
        .await
        .map_err(|e| format!("{name} could not be read: {}", super::js_error(&e)))?;
    let bytes = Uint8Array::new(&buf).to_vec();
    let ours = bytes.starts_with(b"\x89PNG") || bytes.get(128..132) == Some(b"DICM");
    if ours {
        let img = crate::image_in::decode_image(&name, &bytes).map_err(sentence)?;
        return Ok(Source {
            name,
            width: img.width,
            height: img.height,
            rgb: img.rgb,
        });
    }
    let window = web_sys::window().ok_or("no window")?;
    let bitmap: ImageBitmap = JsFuture::from(
        window
            .create_image_bitmap_with_blob(&file)
            .map_err(|e| super::js_error(&e))?,
    )
    .await
    .map_err(|_| {
        format!(
            "{name} is not an image this browser can read (PNG, JPEG or DICOM); save it as PNG."
        )
    })?
    .unchecked_into();
    let (w, h) = (bitmap.width() as usize, bitmap.height() as usize);
    if w == 0 || h == 0 || w > crate::image_in::MAX_SIDE * 4 || h > crate::image_in::MAX_SIDE * 4 {
        return Err(format!("{name} is {w}x{h}: too large or empty."));
    }
    let doc = window.document().ok_or("no document")?;
    let canvas: HtmlCanvasElement = doc
        .create_element("canvas")
        .map_err(|e| super::js_error(&e))?
        .unchecked_into();
    canvas.set_width(w as u32);
    canvas.set_height(h as u32);
    let c = ctx(&canvas).ok_or("no 2D canvas")?;
    c.draw_image_with_image_bitmap(&bitmap, 0.0, 0.0)
        .map_err(|e| super::js_error(&e))?;
    let data = c
        .get_image_data(0.0, 0.0, w as f64, h as f64)
        .map_err(|e| super::js_error(&e))?
        .data();
    let rgb = data
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .map(|v| v as f32 / 255.0)
        .collect();
    Ok(Source {
        name,
        width: w,
        height: h,
        rgb,
    })
}

fn to_rgba(rgb: &[f32]) -> Vec<u8> {
    rgb.chunks_exact(3)
        .flat_map(|p| {
            let q = |v: f32| (v * 255.0).round().clamp(0.0, 255.0) as u8;
            [q(p[0]), q(p[1]), q(p[2]), 255]
        })
        .collect()
}

impl Page {
    fn size_choice(&self) -> usize {
        self.el::<HtmlSelectElement>("size")
            .value()
            .parse()
            .unwrap_or(512)
    }

    /// Shows the init image fitted to the chosen size (and the mask above it).
    pub(super) fn draw_init(&self) {
        let src = self.bench.source.borrow();
        let Some(s) = src.as_ref() else {
            self.el::<HtmlElement>("edit-box").set_hidden(true);
            return;
        };
        let size = self.size_choice();
        let fitted = crate::image_in::fit_square(&s.rgb, s.width, s.height, size);
        let canvas: HtmlCanvasElement = self.el("init-canvas");
        canvas.set_width(size as u32);
        canvas.set_height(size as u32);
        if let (Some(c), Ok(img)) = (
            ctx(&canvas),
            ImageData::new_with_u8_clamped_array_and_sh(
                wasm_bindgen::Clamped(&to_rgba(&fitted)),
                size as u32,
                size as u32,
            ),
        ) {
            let _ = c.put_image_data(&img, 0.0, 0.0);
        }
        let note = if (s.width, s.height) == (size, size) {
            format!("{} ({}×{}).", s.name, s.width, s.height)
        } else {
            format!(
                "{} ({}×{}): its middle square is used, resized to {size}×{size} (as RoentGen's training images were).",
                s.name, s.width, s.height
            )
        };
        self.el::<HtmlElement>("init-note")
            .set_text_content(Some(&note));
        self.el::<HtmlElement>("edit-box").set_hidden(false);
    }

    pub(super) fn show_mode(&self, mode: Mode) {
        let _ = self
            .el::<HtmlElement>("edit-box")
            .set_attribute("data-mode", mode.name());
        let strength: HtmlInputElement = self.el("strength");
        strength.set_placeholder(mode.strength_placeholder());
        self.el::<HtmlElement>("edit-mode")
            .set_text_content(Some(mode.sentence()));
        let radedit = mode == Mode::RadEdit;
        let method = if radedit {
            EditMethod::RadEdit
        } else {
            EditMethod::Sdedit
        };
        if mode != Mode::TextToImage {
            self.el::<HtmlSelectElement>("edit-method")
                .set_value(method.name());
        }
        self.el::<HtmlElement>("strength-field").set_hidden(radedit);
        self.el::<HtmlElement>("strength-help").set_hidden(radedit);
        self.el::<HtmlElement>("radedit-options")
            .set_hidden(!radedit);
        self.el::<HtmlElement>("clear-mask")
            .set_text_content(Some(if radedit {
                "Clear edit mask"
            } else {
                "Clear mask"
            }));
    }

    pub(super) fn show_layer(&self, layer: Layer) {
        self.el::<HtmlSelectElement>("mask-layer")
            .set_value(layer.name());
    }

    pub(super) fn clear_mask(&self, layer: Layer) {
        let canvas: HtmlCanvasElement = self.el(layer_canvas(layer).0);
        if let Some(c) = ctx(&canvas) {
            c.clear_rect(0.0, 0.0, MASK_SIDE as f64, MASK_SIDE as f64);
        }
    }

    /// Reads a mask file into `layer`'s canvas: PNG or DICOM, gray >= 0.5 in the mask (as
    /// the CLI's `--mask`), of the init image's own size, fitted as the image is.
    async fn load_mask(&self, layer: Layer, file: web_sys::File) -> Result<(), String> {
        let name = file.name();
        let buf = JsFuture::from(file.array_buffer())
            .await
            .map_err(|e| format!("{name} could not be read: {}", super::js_error(&e)))?;
        let m = crate::image_in::decode_mask(&name, &Uint8Array::new(&buf).to_vec())
            .map_err(sentence)?;
        let (w, h) = match self.bench.source.borrow().as_ref() {
            Some(s) => (s.width, s.height),
            None => return Err("Choose the image to edit first, then its mask.".into()),
        };
        if (m.width, m.height) != (w, h) {
            return Err(format!(
                "{name} is {}×{}, but the image is {w}×{h}: a mask must have the image's size.",
                m.width, m.height
            ));
        }
        let side = MASK_SIDE as usize;
        let fitted = crate::image_in::fit_mask(&m.repaint, w, h, side);
        let (id, colour) = layer_canvas(layer);
        let rgb = u32::from_str_radix(&colour[1..], 16).unwrap_or(0xffffff);
        let [_, r, g, b] = rgb.to_be_bytes();
        let rgba: Vec<u8> = fitted
            .iter()
            .flat_map(|&on| if on { [r, g, b, 255] } else { [0; 4] })
            .collect();
        let canvas: HtmlCanvasElement = self.el(id);
        let c = ctx(&canvas).ok_or("no 2D canvas")?;
        let img = ImageData::new_with_u8_clamped_array_and_sh(
            wasm_bindgen::Clamped(&rgba),
            MASK_SIDE,
            MASK_SIDE,
        )
        .map_err(|e| super::js_error(&e))?;
        c.put_image_data(&img, 0.0, 0.0)
            .map_err(|e| super::js_error(&e))?;
        Ok(())
    }

    fn paint_at(&self, ev: &PointerEvent) {
        // the pointer lands on the top canvas; the chosen layer's canvas takes the paint
        let top: HtmlCanvasElement = self.el("mask-canvas");
        let (id, colour) = layer_canvas(self.state.borrow().workbench.layer);
        let canvas: HtmlCanvasElement = self.el(id);
        let r = top.get_bounding_client_rect();
        if r.width() <= 0.0 || r.height() <= 0.0 {
            return;
        }
        let x = (ev.client_x() as f64 - r.left()) / r.width() * MASK_SIDE as f64;
        let y = (ev.client_y() as f64 - r.top()) / r.height() * MASK_SIDE as f64;
        let brush: f64 = self
            .el::<HtmlSelectElement>("brush")
            .value()
            .parse()
            .unwrap_or(40.0);
        if let Some(c) = ctx(&canvas) {
            c.set_fill_style_str(colour);
            c.begin_path();
            let _ = c.arc(x, y, brush, 0.0, std::f64::consts::TAU);
            c.fill();
        }
        self.dispatch(Event::MaskPainted);
    }

    /// A mask at `size x size`: 1 where painted (nearest sample of the layer's canvas).
    fn mask_bytes(&self, layer: Layer, size: usize) -> Option<Vec<u8>> {
        let canvas: HtmlCanvasElement = self.el(layer_canvas(layer).0);
        let c = ctx(&canvas)?;
        let data = c
            .get_image_data(0.0, 0.0, MASK_SIDE as f64, MASK_SIDE as f64)
            .ok()?
            .data();
        let m = MASK_SIDE as usize;
        Some(
            (0..size * size)
                .map(|i| {
                    let (y, x) = (i / size, i % size);
                    let (sy, sx) = ((2 * y + 1) * m / (2 * size), (2 * x + 1) * m / (2 * size));
                    u8::from(data[(sy * m + sx) * 4 + 3] >= 128)
                })
                .collect(),
        )
    }

    /// Adds the edit and the maps choice to the settings; returns the bytes that go
    /// with them (the init image, then the mask or edit mask, then the keep mask:
    /// [`Settings::edit_bytes`]).
    pub(super) fn workbench_settings(&self, s: &mut Settings) -> Result<Vec<JsValue>, String> {
        s.attention_maps = self.el::<HtmlInputElement>("attention-maps").checked();
        let src = self.bench.source.borrow();
        let Some(source) = src.as_ref() else {
            s.edit = None;
            return Ok(vec![]);
        };
        let (mode, masked, keep) = {
            let st = self.state.borrow();
            let w = &st.workbench;
            (w.mode(), w.painted, w.keep_painted)
        };
        let radedit = mode == Mode::RadEdit;
        let edit = if radedit {
            parse_radedit(
                &self.el::<HtmlInputElement>("skip-ratio").value(),
                &self.el::<HtmlInputElement>("invert-prompt").value(),
                masked,
                keep,
            )?
        } else {
            parse_edit(&self.el::<HtmlInputElement>("strength").value(), masked)?
        };
        s.edit = Some(edit);
        let fitted = crate::image_in::fit_square(&source.rgb, source.width, source.height, s.size);
        let rgb8: Vec<u8> = fitted
            .iter()
            .map(|&v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
            .collect();
        let mut parts = vec![rgb8];
        if masked {
            let m = self
                .mask_bytes(Layer::Edit, s.size)
                .ok_or("The mask could not be read.")?;
            if !radedit && !m.contains(&1) {
                return Err("The mask is empty: paint where the image should change, or press Clear mask for image-to-image.".into());
            }
            parts.push(m);
        }
        if radedit && keep {
            let m = self
                .mask_bytes(Layer::Keep, s.size)
                .ok_or("The keep mask could not be read.")?;
            parts.push(m);
        }
        if radedit {
            // checked here with the masks, as the CLI checks them (the same sentences)
            s.request(s.edit_bytes(&parts)).map_err(sentence)?;
        }
        Ok(parts
            .iter()
            .map(|p| Uint8Array::from(p.as_slice()).into())
            .collect())
    }

    /// A new result: keep its pixels for the word overlays, fill Compare's right side.
    pub(super) fn workbench_image(&self, png: &[u8], url: &str, caption: &str) {
        let b = &self.bench;
        b.maps.borrow_mut().take();
        if let Some(u) = b.overlay_url.borrow_mut().take() {
            let _ = Url::revoke_object_url(&u);
        }
        let words: HtmlElement = self.el("words");
        words.set_inner_html("");
        words.set_hidden(true);
        let _ = self
            .el::<HtmlElement>("result")
            .remove_attribute("data-word");
        self.el::<HtmlAnchorElement>("download-dicom")
            .set_hidden(true);
        if let Ok(img) = crate::image_in::decode_image("result.png", png) {
            let gray = img
                .rgb
                .chunks_exact(3)
                .map(|p| (p[0] * 255.0).round() as u8)
                .collect();
            *b.result.borrow_mut() = Some((gray, img.width, img.height, url.to_string()));
        }
        self.el::<HtmlElement>("compare-pin").set_hidden(false);
        if let Some((a_url, a_caption)) = b.pinned.borrow().as_ref() {
            self.el::<HtmlImageElement>("compare-a").set_src(a_url);
            self.el::<HtmlElement>("compare-a-text")
                .set_text_content(Some(a_caption));
            self.el::<HtmlImageElement>("compare-b").set_src(url);
            self.el::<HtmlElement>("compare-b-text")
                .set_text_content(Some(caption));
            self.el::<HtmlElement>("compare").set_hidden(false);
        }
    }

    pub(super) fn workbench_dicom(&self, bytes: &[u8], file_name: &str) {
        let b = &self.bench;
        if let Some(u) = b.dicom_url.borrow_mut().take() {
            let _ = Url::revoke_object_url(&u);
        }
        let Some(url) = blob_url(bytes, "application/dicom") else {
            return;
        };
        let a: HtmlAnchorElement = self.el("download-dicom");
        a.set_href(&url);
        a.set_download(file_name);
        a.set_hidden(false);
        *b.dicom_url.borrow_mut() = Some(url);
    }

    pub(super) fn workbench_maps(
        &self,
        words: Vec<(String, Vec<usize>)>,
        tokens: usize,
        h: usize,
        w: usize,
        metadata: ImageMetadata,
        bytes: &[u8],
    ) {
        let maps: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if maps.len() != tokens * h * w {
            self.show_error("The attention maps arrived damaged.", None);
            return;
        }
        let list: HtmlElement = self.el("words");
        list.set_inner_html("");
        let label = self.doc.create_element("span").unwrap();
        label.set_text_content(Some("Where each word acted (click one):"));
        let _ = list.append_child(&label);
        let show_image = self.button("Show the image without a map", "Image");
        let _ = show_image.set_attribute("data-testid", "word-none");
        on_click(&show_image, |p| p.show_word(None));
        let _ = list.append_child(&show_image);
        for (i, (word, _)) in words.iter().enumerate() {
            let b = self.button(&format!("Show where “{word}” acted"), word);
            let _ = b.set_attribute("data-testid", "word");
            let _ = b.set_attribute("data-word", word);
            let _ = b.set_attribute("aria-pressed", "false");
            on_click(&b, move |p| p.show_word(Some(i)));
            let _ = list.append_child(&b);
        }
        list.set_hidden(false);
        *self.bench.maps.borrow_mut() = Some((
            WordMaps {
                token_ids: vec![0; tokens],
                pieces: vec![String::new(); tokens],
                words,
                maps,
                h,
                w,
            },
            metadata,
        ));
    }

    fn show_word(&self, word: Option<usize>) {
        let b = &self.bench;
        let img: HtmlImageElement = self.el("result");
        let result = b.result.borrow();
        let Some((gray, w, h, url)) = result.as_ref() else {
            return;
        };
        let buttons = self
            .el::<Element>("words")
            .query_selector_all("[data-testid=word]");
        if let Ok(list) = buttons {
            for i in 0..list.length() {
                if let Some(n) = list.item(i) {
                    let e: Element = n.unchecked_into();
                    let on = Some(i as usize) == word;
                    let _ = e.set_attribute("aria-pressed", if on { "true" } else { "false" });
                }
            }
        }
        let Some(i) = word else {
            img.set_src(url);
            let _ = img.remove_attribute("data-word");
            return;
        };
        let maps = b.maps.borrow();
        let Some((m, meta)) = maps.as_ref() else {
            return;
        };
        match m.overlay_png(i, gray, *w, *h, meta) {
            Ok(png) => {
                if let Some(u) = blob_url(&png, "image/png") {
                    if let Some(old) = b.overlay_url.borrow_mut().replace(u.clone()) {
                        let _ = Url::revoke_object_url(&old);
                    }
                    img.set_src(&u);
                    let _ = img.set_attribute("data-word", &m.words[i].0);
                }
            }
            Err(e) => self.show_error(&sentence(e), None),
        }
    }

    /// The prompt builder's form: the checked findings with their side and size.
    fn prompt_form(&self) -> PromptForm {
        let value = |id: &str| self.el::<HtmlInputElement>(id).value();
        let select = |id: &str| self.el::<HtmlSelectElement>(id).value();
        PromptForm {
            checked: LABELS
                .iter()
                .filter(|l| {
                    self.el::<HtmlInputElement>(&format!("finding-{}", l.id))
                        .checked()
                })
                .map(|l| CheckedFinding {
                    id: l.id,
                    side: if l.sided {
                        select(&format!("side-{}", l.id))
                    } else {
                        String::new()
                    },
                    size: if l.sized {
                        select(&format!("size-{}", l.id))
                    } else {
                        String::new()
                    },
                })
                .collect(),
            age: value("age"),
            sex: select("sex"),
            race: select("race"),
        }
    }

    /// After a load: the model's recipe (RoentGen v1: PNDM, 75 steps, guidance 4; v2:
    /// guidance 3; RadEdit: DDIM, 100 steps, guidance 7.5) in the fields that still hold
    /// the recipe they were given before ([`recipe_changes`]); the demographics for SD 2.x.
    pub(super) fn workbench_family(
        &self,
        family: Option<Family>,
        previous: &FormRecipe,
        recipe: &FormRecipe,
    ) {
        let g: HtmlInputElement = self.el("guidance");
        let st: HtmlInputElement = self.el("steps");
        let sc: HtmlSelectElement = self.el("scheduler");
        let c = recipe_changes(previous, recipe, &g.value(), &st.value(), &sc.value());
        if let Some(v) = c.guidance {
            g.set_value(&v);
        }
        if let Some(v) = c.scheduler {
            sc.set_value(&v);
        }
        if let Some(v) = c.steps {
            st.set_value(&v);
        }
        self.el::<HtmlElement>("demographics")
            .set_hidden(Style::of(family) != Style::Demographics);
        let _ = self.el::<HtmlElement>("prompt-builder").set_attribute(
            "data-family",
            match family {
                Some(Family::Sd1) => "sd1",
                Some(Family::Sd2) => "sd2",
                Some(Family::RadEdit) => "radedit",
                None => "other",
            },
        );
    }
}

fn option(doc: &web_sys::Document, select: &Element, value: &str, text: &str) {
    let o = doc.create_element("option").unwrap();
    let _ = o.set_attribute("value", value);
    o.set_text_content(Some(text));
    let _ = select.append_child(&o);
}

/// A finding's side or size select (`id` `{what}-{label}`), appended to `li`.
fn chooser(
    doc: &web_sys::Document,
    li: &Element,
    what: &str,
    l: &findings::Label,
    options: &[(&str, &str)],
) {
    let s = doc.create_element("select").unwrap();
    s.set_id(&format!("{what}-{}", l.id));
    let _ = s.set_attribute("data-testid", &format!("{what}-{}", l.id));
    let _ = s.set_attribute("aria-label", &format!("{}: {what}", l.name));
    for (v, t) in options {
        option(doc, &s, v, t);
    }
    let _ = li.append_child(&s);
}

/// Builds the findings list and wires the workbench's controls.
pub(super) fn setup(p: &Rc<Page>) {
    let doc = &p.doc;
    let list: Element = p.el("findings");
    for l in LABELS {
        let li = doc.create_element("li").unwrap();
        let label = doc.create_element("label").unwrap();
        let cb: HtmlInputElement = doc.create_element("input").unwrap().unchecked_into();
        cb.set_type("checkbox");
        cb.set_id(&format!("finding-{}", l.id));
        let _ = cb.set_attribute("data-testid", &format!("finding-{}", l.id));
        let id = l.id;
        EventListener::new(&cb, "change", move |ev| {
            let on = ev
                .target()
                .map(|t| t.unchecked_into::<HtmlInputElement>().checked())
                .unwrap_or(false);
            page().dispatch(Event::FindingTicked { id, on });
        })
        .forget();
        let _ = label.append_child(&cb);
        let name = doc.create_element("span").unwrap();
        name.set_text_content(Some(&format!(" {}", l.name)));
        let _ = label.append_child(&name);
        let _ = li.append_child(&label);
        if l.sided {
            let sides = [
                ("", "side…"),
                ("right", "right"),
                ("left", "left"),
                ("bilateral", "both"),
            ];
            chooser(doc, &li, "side", &l, &sides);
        }
        if l.sized {
            let sizes = [
                ("", "size…"),
                ("small", "small / mild"),
                ("moderate", "moderate"),
                ("large", "large / severe"),
            ];
            chooser(doc, &li, "size", &l, &sizes);
        }
        let _ = list.append_child(&li);
    }
    on_click(&p.el("build-prompt"), |p| {
        p.dispatch(Event::BuildPrompt(p.prompt_form()))
    });

    let input: HtmlInputElement = p.el("init-image");
    EventListener::new(&input, "change", |ev| {
        let input: HtmlInputElement = ev.target().unwrap().unchecked_into();
        let Some(file) = input.files().and_then(|f| f.get(0)) else {
            return;
        };
        input.set_value("");
        wasm_bindgen_futures::spawn_local(async move {
            let p = page();
            match decode_file(file).await {
                Ok(src) => {
                    *p.bench.source.borrow_mut() = Some(src);
                    p.dispatch(Event::InitImage(Ok(())));
                }
                Err(m) => p.dispatch(Event::InitImage(Err(m))),
            }
        });
    })
    .forget();
    EventListener::new(&p.el::<HtmlElement>("size"), "change", |_| {
        page().draw_init()
    })
    .forget();
    on_click(&p.el("clear-mask"), |p| {
        p.dispatch(Event::MaskCleared(Layer::Edit))
    });
    on_click(&p.el("clear-keep"), |p| {
        p.dispatch(Event::MaskCleared(Layer::Keep))
    });
    EventListener::new(&p.el::<HtmlElement>("edit-method"), "change", |ev| {
        let v = ev
            .target()
            .map(|t| t.unchecked_into::<HtmlSelectElement>().value())
            .unwrap_or_default();
        page().dispatch(Event::EditMethodChosen(
            EditMethod::from_name(&v).unwrap_or_default(),
        ));
    })
    .forget();
    EventListener::new(&p.el::<HtmlElement>("mask-layer"), "change", |ev| {
        let v = ev
            .target()
            .map(|t| t.unchecked_into::<HtmlSelectElement>().value())
            .unwrap_or_default();
        page().dispatch(Event::LayerChosen(Layer::from_name(&v).unwrap_or_default()));
    })
    .forget();
    let mask_file: HtmlInputElement = p.el("mask-file");
    EventListener::new(&mask_file, "change", |ev| {
        let input: HtmlInputElement = ev.target().unwrap().unchecked_into();
        let Some(file) = input.files().and_then(|f| f.get(0)) else {
            return;
        };
        input.set_value("");
        wasm_bindgen_futures::spawn_local(async move {
            let p = page();
            let layer = p.state.borrow().workbench.layer;
            let result = p.load_mask(layer, file).await;
            p.dispatch(Event::MaskLoaded { layer, result });
        });
    })
    .forget();
    on_click(&p.el("remove-init"), |p| {
        p.bench.source.borrow_mut().take();
        p.dispatch(Event::InitRemoved);
    });
    let keep: HtmlCanvasElement = p.el("keep-canvas");
    keep.set_width(MASK_SIDE);
    keep.set_height(MASK_SIDE);
    let mask: HtmlCanvasElement = p.el("mask-canvas");
    mask.set_width(MASK_SIDE);
    mask.set_height(MASK_SIDE);
    EventListener::new(&mask, "pointerdown", |ev| {
        let e: &PointerEvent = ev.unchecked_ref();
        let canvas: HtmlCanvasElement = ev.target().unwrap().unchecked_into();
        let _ = canvas.set_pointer_capture(e.pointer_id());
        page().bench.painting.set(true);
        page().paint_at(e);
    })
    .forget();
    EventListener::new(&mask, "pointermove", |ev| {
        if page().bench.painting.get() {
            page().paint_at(ev.unchecked_ref());
        }
    })
    .forget();
    for end in ["pointerup", "pointercancel"] {
        EventListener::new(&mask, end, |_| page().bench.painting.set(false)).forget();
    }

    on_click(&p.el("compare-pin"), |p| {
        let b = &p.bench;
        let Some(url) = b.result.borrow().as_ref().map(|r| r.3.clone()) else {
            return;
        };
        let caption = p
            .el::<HtmlElement>("result-text")
            .text_content()
            .unwrap_or_default();
        p.el::<HtmlImageElement>("compare-a").set_src(&url);
        p.el::<HtmlElement>("compare-a-text")
            .set_text_content(Some(&caption));
        p.el::<HtmlImageElement>("compare-b").set_src("");
        p.el::<HtmlElement>("compare-b-text")
            .set_text_content(Some("The next image you generate appears here."));
        p.el::<HtmlElement>("compare").set_hidden(false);
        *b.pinned.borrow_mut() = Some((url, caption));
    });
    on_click(&p.el("compare-close"), |p| {
        p.bench.pinned.borrow_mut().take();
        p.el::<HtmlElement>("compare").set_hidden(true);
    });
    let _ = p.el::<HtmlButtonElement>("compare-pin");
}
