//! `#[lovage::task]`: registers a function as a lovage task.
//!
//! ```ignore
//! #[lovage::task(max_retries = 3, queue = "math")]
//! fn add(a: i64, b: i64) -> i64 { a + b }
//!
//! add(1, 2);            // the function is unchanged: call it locally
//! add::s(1, 2);         // a TypedSignature<i64> to send to a pool or a queue
//! add::NAME;            // "my_crate::add", the name messages carry
//! add::delay(&pool, 1, 2); // send it to a pool or a queue (anything that implements Dispatch)
//! ```
//!
//! The function stays as written. Beside it, a struct of the same name holds the helpers as
//! associated items, and a `TaskEntry` goes to the process-wide registry, so a worker finds the
//! task by name.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::{parse_macro_input, spanned::Spanned, FnArg, ItemFn, Lit, Pat, ReturnType, Type};

/// Registers a plain `fn` or an `async fn` with serde arguments and result as a lovage task.
///
/// Options: `name = "..."`, `queue = "..."`, `priority = 0..=9`, `max_retries = N`,
/// `retry_backoff = "1s"`, `retry_backoff_max = "10m"`, `retry_jitter = bool`,
/// `autoretry_for = "KindA,KindB"`, `time_limit = "30s"`, `soft_time_limit = "25s"`,
/// `rate_limit = "100/s"`, `ignore_result = bool`, `codec = "json" | "msgpack"`,
/// `resources = "gpu=1,mem=2"` (Dask's `resources=`: runs only on workers started with at least
/// those units, `lovage worker --resources gpu=N`; a bare name is 1 unit, `gpu=0.5` half of
/// one: at most 3 decimals),
/// `crate = path` (where lovage's items live, default `::lovage`).
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut opts = Attr::default();
    let parser = syn::meta::parser(|meta| opts.parse(meta));
    parse_macro_input!(attr with parser);
    let func = parse_macro_input!(item as ItemFn);
    match expand(opts, func) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

#[derive(Default)]
struct Attr {
    krate: Option<syn::Path>,
    name: Option<syn::LitStr>,
    /// Statements that set fields of a `TaskOptions` named `o` (and a `RetryPolicy` named `r`).
    option_setters: Vec<TokenStream2>,
    retry_setters: Vec<TokenStream2>,
    codec: Option<TokenStream2>,
    /// Where `Graph`, `Delayed` and `IntoArg` live; `delayed` is generated when known.
    graph: Option<syn::Path>,
    /// Identical calls are one node in a graph (`pure = true`).
    pure: bool,
}

impl Attr {
    fn parse(&mut self, meta: syn::meta::ParseNestedMeta) -> syn::Result<()> {
        let key = meta
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        if key == "crate" {
            self.krate = Some(meta.value()?.parse()?);
            return Ok(());
        }
        if key == "graph" {
            self.graph = Some(meta.value()?.parse()?);
            return Ok(());
        }
        let lit: Lit = meta.value()?.parse()?;
        let setter = match key.as_str() {
            "name" => {
                self.name = Some(lit_str(&lit)?);
                return Ok(());
            }
            "queue" => {
                let s = lit_str(&lit)?;
                quote!(o.queue = Some(#s.to_owned());)
            }
            "priority" => {
                let p = lit_int(&lit)?;
                if p > 9 {
                    return Err(syn::Error::new(lit.span(), "priority is 0..=9"));
                }
                let p = p as u8;
                quote!(o.priority = Some(#p);)
            }
            "time_limit" | "soft_time_limit" => {
                let secs = lit_duration(&lit)?;
                let field = format_ident!("{}", key);
                quote!(o.#field = Some(__p::Duration::from_secs_f64(#secs));)
            }
            "rate_limit" => {
                let s = lit_str(&lit)?;
                quote!(o.rate_limit = Some(#s.to_owned());)
            }
            "resources" => {
                let s = lit_str(&lit)?;
                let pairs =
                    parse_resources(&s.value()).map_err(|e| syn::Error::new(s.span(), e))?;
                let (names, milli): (Vec<String>, Vec<u64>) = pairs.into_iter().unzip();
                quote!(o.resources = Some(__p::Resources::from([
                    #((#names.to_owned(), __p::ResourceUnits::from_milli(#milli))),*
                ]));)
            }
            "ignore_result" | "track_started" | "acks_late" | "reject_on_worker_lost" => {
                let b = lit_bool(&lit)?;
                let field = format_ident!("{}", key);
                quote!(o.#field = Some(#b);)
            }
            "codec" => {
                let s = lit_str(&lit)?;
                let variant = match s.value().as_str() {
                    "json" => quote!(Json),
                    "msgpack" => quote!(Msgpack),
                    _ => {
                        return Err(syn::Error::new(
                            s.span(),
                            "codec is \"json\" or \"msgpack\"",
                        ))
                    }
                };
                self.codec = Some(quote!(__p::Codec::#variant));
                quote!(o.codec = Some(__p::Codec::#variant);)
            }
            "pure" => {
                self.pure = lit_bool(&lit)?;
                return Ok(());
            }
            "max_retries" => {
                let n = lit_int(&lit)? as u32;
                self.retry_setters.push(quote!(r.max_retries = #n;));
                return Ok(());
            }
            "retry_backoff" | "retry_backoff_max" => {
                let secs = lit_duration(&lit)?;
                let field = if key == "retry_backoff" {
                    format_ident!("backoff_base")
                } else {
                    format_ident!("backoff_max")
                };
                self.retry_setters
                    .push(quote!(r.#field = __p::Duration::from_secs_f64(#secs);));
                return Ok(());
            }
            "retry_jitter" => {
                let b = lit_bool(&lit)?;
                self.retry_setters.push(quote!(r.jitter = #b;));
                return Ok(());
            }
            "autoretry_for" => {
                let kinds: Vec<String> = lit_str(&lit)?
                    .value()
                    .split(',')
                    .map(|k| k.trim().to_owned())
                    .filter(|k| !k.is_empty())
                    .collect();
                self.retry_setters
                    .push(quote!(r.retry_on = vec![#(#kinds.to_owned()),*];));
                return Ok(());
            }
            _ => {
                return Err(meta.error(format!(
                "unknown lovage task option `{key}` (known: name, queue, priority, max_retries, \
                     retry_backoff, retry_backoff_max, retry_jitter, autoretry_for, time_limit, \
                     soft_time_limit, rate_limit, resources, ignore_result, track_started, \
                     acks_late, reject_on_worker_lost, codec, pure, crate, graph)"
            )))
            }
        };
        self.option_setters.push(setter);
        Ok(())
    }
}

/// The resource text rules of `lovage_core::parse_resources`, from the very same file, so a
/// bad attribute fails the build with the words a bad `--resources` gets at run time.
#[path = "../../lovage-core/src/resources/text.rs"]
mod resource_text;

/// `resources = "gpu=2,mem,tpu=0.5"` as (name, milli-units) pairs, checked as
/// `lovage_core::parse_resources` does at run time, so a bad attribute fails the build instead
/// of every send.
fn parse_resources(text: &str) -> Result<Vec<(String, u64)>, String> {
    let out = resource_text::parse_list(text).map_err(|e| format!("resources: {e}"))?;
    if out.is_empty() {
        return Err("resources: give at least one, e.g. \"gpu=1\"".into());
    }
    Ok(out)
}

fn lit_str(lit: &Lit) -> syn::Result<syn::LitStr> {
    match lit {
        Lit::Str(s) => Ok(s.clone()),
        _ => Err(syn::Error::new(lit.span(), "expected a string")),
    }
}

fn lit_int(lit: &Lit) -> syn::Result<u64> {
    match lit {
        Lit::Int(i) => i.base10_parse(),
        _ => Err(syn::Error::new(lit.span(), "expected an integer")),
    }
}

fn lit_bool(lit: &Lit) -> syn::Result<bool> {
    match lit {
        Lit::Bool(b) => Ok(b.value),
        _ => Err(syn::Error::new(lit.span(), "expected true or false")),
    }
}

/// A duration as seconds: a number, or a string like "250ms", "30s", "5m", "2h".
fn lit_duration(lit: &Lit) -> syn::Result<f64> {
    let bad = || {
        syn::Error::new(
            lit.span(),
            "expected a duration such as 30, \"250ms\", \"30s\", \"5m\" or \"2h\"",
        )
    };
    match lit {
        Lit::Int(i) => i.base10_parse::<u64>().map(|v| v as f64),
        Lit::Float(f) => f.base10_parse::<f64>(),
        Lit::Str(s) => {
            let text = s.value();
            let t = text.trim();
            let split = t
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(t.len());
            let value: f64 = t[..split].parse().map_err(|_| bad())?;
            let scale = match t[split..].trim() {
                "" | "s" => 1.0,
                "ms" => 1e-3,
                "m" => 60.0,
                "h" => 3600.0,
                "d" => 86400.0,
                _ => return Err(bad()),
            };
            Ok(value * scale)
        }
        _ => Err(bad()),
    }
}

/// For `Result<T, E>` (any path ending in `Result`), the `T`.
fn result_ok_type(ty: &Type) -> Option<&Type> {
    let Type::Path(tp) = ty else { return None };
    let last = tp.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    args.args.iter().find_map(|a| match a {
        syn::GenericArgument::Type(t) => Some(t),
        _ => None,
    })
}

fn expand(attr: Attr, func: ItemFn) -> syn::Result<TokenStream2> {
    let sig = &func.sig;
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "a lovage task cannot be generic: a message must name one concrete function",
        ));
    }
    let fn_name = &sig.ident;
    let vis = &func.vis;
    let krate = attr
        .krate
        .clone()
        .unwrap_or_else(|| syn::parse_quote!(::lovage));

    let mut arg_names = Vec::new();
    let mut arg_types = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new(
                    r.span(),
                    "a lovage task is a free function, not a method",
                ))
            }
            FnArg::Typed(pt) => {
                let Pat::Ident(pi) = &*pt.pat else {
                    return Err(syn::Error::new(
                        pt.pat.span(),
                        "task arguments must be plain names",
                    ));
                };
                if matches!(&*pt.ty, Type::Reference(_)) {
                    return Err(syn::Error::new(
                        pt.ty.span(),
                        "task arguments must be owned types (they are decoded from a message)",
                    ));
                }
                arg_names.push(pi.ident.clone());
                arg_types.push((*pt.ty).clone());
            }
        }
    }

    let unit: Type = syn::parse_quote!(());
    let ret_ty = match &sig.output {
        ReturnType::Default => &unit,
        ReturnType::Type(_, t) => t,
    };
    let (value_ty, returns_result) = match result_ok_type(ret_ty) {
        Some(ok) => (ok, true),
        None => (ret_ty, false),
    };
    let is_async = sig.asyncness.is_some();

    let call = if is_async {
        quote!(#fn_name(#(#arg_names),*).await)
    } else {
        quote!(#fn_name(#(#arg_names),*))
    };
    let unwrap = if returns_result {
        quote! {
            let out = match out {
                Ok(v) => v,
                Err(e) => {
                    #[allow(unused_imports)]
                    use __p::{ViaBoxedError as _, ViaDisplay as _, ViaStdError as _};
                    return Err((&&&__p::ErrorConverter(&e)).to_task_error());
                }
            };
        }
    } else {
        quote!()
    };
    let args_tuple = if arg_names.is_empty() {
        quote!(&[0u8; 0])
    } else {
        quote!(&(#(&#arg_names,)*))
    };
    let name_expr = match &attr.name {
        Some(n) => quote!(#n),
        None => quote!(concat!(module_path!(), "::", stringify!(#fn_name))),
    };
    let what_args = match &attr.name {
        Some(n) => format!("arguments of task {}", n.value()),
        None => String::new(),
    };
    let what_args = if what_args.is_empty() {
        quote!(concat!(
            "arguments of task ",
            module_path!(),
            "::",
            stringify!(#fn_name)
        ))
    } else {
        quote!(#what_args)
    };
    let default_codec = attr.codec.clone().unwrap_or(quote!(__p::Codec::Json));
    let option_setters = &attr.option_setters;
    let retry_setters = &attr.retry_setters;
    let retry_block = if retry_setters.is_empty() {
        quote!()
    } else {
        quote! {
            let mut r = __p::RetryPolicy::default();
            #(#retry_setters)*
            o.retry = Some(r);
        }
    };
    let args_struct = format_ident!("__{}Args", "Task");
    // Trailing `Option` parameters may be left out of a positional argument list.
    let arg_attrs: Vec<TokenStream2> = arg_types
        .iter()
        .map(|t| match t {
            Type::Path(tp) if tp.path.segments.last().is_some_and(|s| s.ident == "Option") => {
                quote!(#[serde(default)])
            }
            _ => quote!(),
        })
        .collect();
    let p = quote!(#krate::__private);
    // `partial`: every argument but the first, which a workflow fills with the previous result.
    let partial_fn = match (arg_names.split_first(), arg_types.split_first()) {
        (Some((_, rest_names)), Some((_, rest_types))) => {
            let rest_tuple = if rest_names.is_empty() {
                quote!(&[0u8; 0])
            } else {
                quote!(&(#(&#rest_names,)*))
            };
            quote! {
                /// A signature for a workflow step that receives the previous step's result as
                /// its first argument; these are the others (Celery's `add.s(10)` in a chain).
                pub fn partial(#(#rest_names: #rest_types),*) -> #p::TypedSignature<#value_ty> {
                    #[allow(unused_imports)]
                    use #p as __p;
                    __p::TypedSignature::encode(Self::NAME, #rest_tuple, #default_codec)
                }
            }
        }
        _ => quote!(),
    };
    // `delayed`: with the default crate path the graph lives at `::lovage::graph`; a crate
    // that names `crate = ...` names `graph = ...` too, or gets no `delayed`.
    let graph_path: Option<syn::Path> = match (&attr.graph, &attr.krate) {
        (Some(g), _) => Some(g.clone()),
        (None, None) => Some(syn::parse_quote!(::lovage::graph)),
        (None, Some(_)) => None,
    };
    let pure = attr.pure;
    let delayed_fn = match &graph_path {
        None => quote!(),
        Some(gp) => {
            let g = quote!(#gp::__private);
            let into_args = arg_names
                .iter()
                .map(|a| quote!(#g::IntoArg::into_arg(#a, __graph)));
            let call_body = quote! {
                #[allow(unused_imports)]
                use #p as __p;
                let out = #call;
                #unwrap
                ::std::result::Result::Ok(out)
            };
            let call_fn = if is_async {
                quote!(|(#(#arg_names,)*): (#(#arg_types,)*)| #krate::block_on(async move { #call_body }))
            } else {
                quote!(|(#(#arg_names,)*): (#(#arg_types,)*)| { #call_body })
            };
            quote! {
                /// Adds a call of this task to a graph; each argument is a value or a
                /// `Delayed` of the parameter's type (Dask's `delayed(f)(...)`).
                pub fn delayed<__G>(__g: &__G, #(#arg_names: impl #g::IntoArg<#arg_types>),*) -> #g::Delayed<#value_ty>
                where
                    __G: #g::TaskGraph<(#(#g::Arg<#arg_types>,)*), (#(#arg_types,)*), #value_ty>,
                {
                    #[allow(unused_imports)]
                    use #p as __p;
                    let __graph = #g::TaskGraph::graph(__g);
                    let __args = (#(#into_args,)*);
                    #g::TaskGraph::task(__g, Self::NAME, Self::PURE, #default_codec, __args, #call_fn)
                }
            }
        }
    };
    let serde_path = quote!(#krate::__private::serde).to_string();
    let body = quote! {
        #[allow(unused_imports)]
        use #p as __p;
        #[derive(#p::serde::Deserialize)]
        #[serde(crate = #serde_path, deny_unknown_fields)]
        struct #args_struct { #(#arg_attrs #arg_names: #arg_types),* }
        let #args_struct { #(#arg_names),* } = codec.decode(args, #what_args)?;
        let out = #call;
        #unwrap
        Ok(codec.encode::<#value_ty>(&out, "task result")?)
    };
    let (invoke_fn, run) = if is_async {
        (
            quote! {
                fn __invoke(args: ::std::vec::Vec<u8>, codec: #p::Codec) -> #p::TaskFuture {
                    ::std::boxed::Box::pin(async move {
                        let args = &args[..];
                        #body
                    })
                }
            },
            quote!(#p::TaskFn::Async(<#fn_name>::__invoke)),
        )
    } else {
        (
            quote! {
                fn __invoke(args: &[u8], codec: #p::Codec) -> ::std::result::Result<::std::vec::Vec<u8>, #p::TaskError> {
                    #body
                }
            },
            quote!(#p::TaskFn::Blocking(<#fn_name>::__invoke)),
        )
    };
    let doc = format!("lovage helpers for the task [`{fn_name}`](fn@{fn_name}): its name, options and signature builder.");
    let _ = Span::call_site();

    Ok(quote! {
        #func

        // Beside the function (value namespace), a braced struct of the same name (type namespace
        // only) carries the helpers: `add(1, 2)` calls, `add::s(1, 2)` builds a call. Unlike a
        // module, this also works for tasks declared inside a function body.
        #[doc = #doc]
        #[allow(non_camel_case_types)]
        #vis struct #fn_name {}

        #[allow(dead_code, clippy::all)]
        impl #fn_name {
            /// The name this task is registered under.
            pub const NAME: &'static str = #name_expr;

            /// True when identical calls may share one result (`pure = true`).
            pub const PURE: bool = #pure;

            /// The options set on the task's attribute.
            pub fn options() -> #p::TaskOptions {
                #[allow(unused_imports)]
                use #p as __p;
                #[allow(unused_mut)]
                let mut o = __p::TaskOptions::default();
                #(#option_setters)*
                #retry_block
                o
            }

            /// A signature of a call to this task with these arguments, to send to a pool or a queue.
            pub fn s(#(#arg_names: #arg_types),*) -> #p::TypedSignature<#value_ty> {
                #[allow(unused_imports)]
                use #p as __p;
                __p::TypedSignature::encode(Self::NAME, #args_tuple, #default_codec)
            }

            /// A call whose arguments are values or futures of the parameters' types (Dask's
            /// `client.submit(f, future, …)`): sent with a client's `submit_after`, it runs once
            /// every future it takes has finished, with their values.
            pub fn after(#(#arg_names: impl #p::IntoAfterArg<#arg_types>),*) -> #p::After<#value_ty> {
                #[allow(unused_imports)]
                use #p as __p;
                __p::After::new(Self::NAME, #default_codec, ::std::vec![#(#p::IntoAfterArg::<#arg_types>::into_after_arg(#arg_names)),*])
            }

            /// Sends a call with these arguments to a pool or a queue (Celery's `delay`).
            pub fn delay<D: #p::Dispatch>(to: &D, #(#arg_names: #arg_types),*) -> ::std::result::Result<D::Handle<#value_ty>, D::Error> {
                to.dispatch(Self::s(#(#arg_names),*))
            }

            #partial_fn

            #delayed_fn

            #invoke_fn
        }

        #p::inventory::submit! {
            #p::TaskEntry { name: <#fn_name>::NAME, run: #run, options: <#fn_name>::options }
        }
    })
}

#[cfg(test)]
mod resources_tests {
    use super::parse_resources;

    #[test]
    fn resources_parse_as_on_the_command_line() {
        assert_eq!(
            parse_resources("gpu=2, mem,tpu=0.25").unwrap(),
            vec![
                ("gpu".to_owned(), 2000),
                ("mem".to_owned(), 1000),
                ("tpu".to_owned(), 250)
            ]
        );
    }

    #[test]
    fn bad_resources_say_what_is_wrong() {
        for (text, says) in [
            ("gpu=0", "more than 0 units"),
            ("gpu=two", "not a number of units"),
            ("gpu=NaN", "not a number of units"),
            ("gpu=-0.5", "negative"),
            ("gpu=0.0001", "more than 3 decimals"),
            ("g pu", "resource name \"g pu\""),
            ("gpu,gpu=2", "given twice"),
            ("", "at least one"),
        ] {
            let e = parse_resources(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }
}
