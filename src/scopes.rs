//! Xero's OAuth 2.0 scopes in one table: every name the tool knows, broad or granular, read or
//! write, the API area and paths it opens, and for a deprecated broad scope its granular
//! replacements and the dates that apply. Also the shorthands `login --scope` accepts, and the
//! lookup of a name the table does not know (a typo, or a scope Xero added since).
//!
//! Sources, cited per entry below as [S1]..[S4]:
//! - [S1] Xero's scope reference, <https://developer.xero.com/documentation/oauth2/scopes>
//!   (the broad scopes, their endpoint lists, the OpenID and `offline_access` scopes, the
//!   unchanged accounting, payroll, files, assets and projects scopes).
//! - [S2] Xero's MCP server, `XeroAPI/xero-mcp-server`, `src/clients/xero-client.ts`
//!   (`XERO_DEFAULT_AUTH_SCOPES_V2`: "Granular scopes (required for new apps)") and
//!   `src/helpers/scopes.ts` (its list of known granular names).
//! - [S3] Apideck, "Xero scopes" (<https://www.apideck.com/blog/xero-scopes>): which endpoints
//!   each granular scope covers, and that apps created on or after 2 March 2026 get only
//!   granular scopes while older apps have until September 2027.
//! - [S4] The report scopes `accounting.reports.banksummary.read`, `.budgetsummary.read`,
//!   `.executivesummary.read` and `.taxreports.read`: named by third-party migration guides, not
//!   found in a list published by Xero; marked `confirmed: false` so that the tool says so.
//!
//! Custom connections created from 29 April 2026 take only granular scopes too, and Xero answers
//! a broad scope asked of a granular-only client with `unauthorized_client` ("Invalid scope for
//! client") at the authorize step or `invalid_scope` at the token endpoint (XeroAPI issue threads,
//! e.g. `XeroAPI/xero-python-oauth2-app#14` for the message).
//!
//! This module imports nothing from the crate: the configuration and the commands use it.

/// What a scope lets a token do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `GET` only.
    Read,
    /// Every method (a write scope includes reading).
    Write,
    /// Not an API area: who the user is (OpenID Connect), or a refresh token.
    Identity,
}

/// Where a scope stands in Xero's 2026 move to granular scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A broad scope Xero is retiring: see [`DEPRECATION`].
    Deprecated,
    /// A granular scope, new in 2026.
    Granular,
    /// A scope the move leaves as it is.
    Unchanged,
}

/// One scope.
#[derive(Debug)]
pub struct Scope {
    pub name: &'static str,
    pub access: Access,
    pub kind: Kind,
    /// The API, as a person would name it ("Accounting", "Payroll", ...).
    pub area: &'static str,
    /// The paths it opens: prefixes of a request's path, compared segment by segment without
    /// regard to case. `*` matches one segment (`/api.xro/2.0/*/*/Attachments`).
    pub paths: &'static [&'static str],
    /// For a deprecated scope, the granular scopes that together cover what it covered.
    pub replaced_by: &'static [&'static str],
    /// Whether Xero itself publishes the name (see [S4] above).
    pub confirmed: bool,
}

/// The dates of the move away from the broad scopes [S3], [S2]; see also the module's
/// documentation for custom connections.
pub struct Deprecation {
    /// Apps created on or after this day get only granular scopes.
    pub new_apps_from: &'static str,
    /// Custom connections created on or after this day get only granular scopes.
    pub custom_connections_from: &'static str,
    /// Older apps may keep asking for broad scopes until then (a month, as Xero gives it).
    pub existing_apps_until: &'static str,
}

pub const DEPRECATION: Deprecation = Deprecation {
    new_apps_from: "2 March 2026",
    custom_connections_from: "29 April 2026",
    existing_apps_until: "September 2027",
};

const ACC: &str = "/api.xro/2.0";

macro_rules! scope {
    ($name:literal, $access:ident, $kind:ident, $area:literal, [$($path:literal),* $(,)?]) => {
        scope!($name, $access, $kind, $area, [$($path),*], [])
    };
    ($name:literal, $access:ident, $kind:ident, $area:literal, [$($path:literal),* $(,)?],
     [$($by:literal),* $(,)?]) => {
        Scope {
            name: $name,
            access: Access::$access,
            kind: Kind::$kind,
            area: $area,
            paths: &[$($path),*],
            replaced_by: &[$($by),*],
            confirmed: true,
        }
    };
}

// The paths of the accounting scopes, shared by a write scope and its `.read` twin. Every path is
// under `ACC`; a test checks that they start with it.
const TRANSACTIONS: &[&str] = &[
    "/api.xro/2.0/BankTransactions",
    "/api.xro/2.0/BankTransfers",
    "/api.xro/2.0/BatchPayments",
    "/api.xro/2.0/CreditNotes",
    "/api.xro/2.0/ExpenseClaims",
    "/api.xro/2.0/Invoices",
    "/api.xro/2.0/LinkedTransactions",
    "/api.xro/2.0/ManualJournals",
    "/api.xro/2.0/Overpayments",
    "/api.xro/2.0/Quotes",
    "/api.xro/2.0/Payments",
    "/api.xro/2.0/Prepayments",
    "/api.xro/2.0/PurchaseOrders",
    "/api.xro/2.0/Receipts",
    "/api.xro/2.0/RepeatingInvoices",
];
const INVOICES: &[&str] = &[
    "/api.xro/2.0/CreditNotes",
    "/api.xro/2.0/Invoices",
    "/api.xro/2.0/LinkedTransactions",
    "/api.xro/2.0/PurchaseOrders",
    "/api.xro/2.0/Quotes",
    "/api.xro/2.0/RepeatingInvoices",
    "/api.xro/2.0/Items",
];
const PAYMENTS: &[&str] = &[
    "/api.xro/2.0/BatchPayments",
    "/api.xro/2.0/Overpayments",
    "/api.xro/2.0/Payments",
    "/api.xro/2.0/Prepayments",
];
const BANKTRANSACTIONS: &[&str] = &["/api.xro/2.0/BankTransactions", "/api.xro/2.0/BankTransfers"];
const MANUALJOURNALS: &[&str] = &["/api.xro/2.0/ManualJournals"];
const CLASSICEXPENSES: &[&str] = &["/api.xro/2.0/ExpenseClaims", "/api.xro/2.0/Receipts"];
const SETTINGS: &[&str] = &[
    "/api.xro/2.0/Accounts",
    "/api.xro/2.0/BrandingThemes",
    "/api.xro/2.0/Currencies",
    "/api.xro/2.0/InvoiceReminders",
    "/api.xro/2.0/Items",
    "/api.xro/2.0/Organisation",
    "/api.xro/2.0/TaxRates",
    "/api.xro/2.0/TrackingCategories",
    "/api.xro/2.0/Users",
];
const CONTACTS: &[&str] = &["/api.xro/2.0/Contacts", "/api.xro/2.0/ContactGroups"];
const ATTACHMENTS: &[&str] = &["/api.xro/2.0/*/*/Attachments"];
const REPORTS: &[&str] = &["/api.xro/2.0/Reports"];

/// Every scope the tool knows, in the order `scopes` lists them.
pub static SCOPES: &[Scope] = &[
    // OpenID Connect and offline access [S1].
    scope!("openid", Identity, Unchanged, "OpenID Connect", []),
    scope!("profile", Identity, Unchanged, "OpenID Connect", []),
    scope!("email", Identity, Unchanged, "OpenID Connect", []),
    scope!("offline_access", Identity, Unchanged, "Refresh token", []),
    // The broad accounting scopes being retired [S1] (paths), [S3] (replacements).
    Scope {
        paths: TRANSACTIONS,
        ..scope!(
            "accounting.transactions",
            Write,
            Deprecated,
            "Accounting",
            [],
            [
                "accounting.invoices",
                "accounting.payments",
                "accounting.banktransactions",
                "accounting.manualjournals",
                "accounting.classicexpenses",
            ]
        )
    },
    Scope {
        paths: TRANSACTIONS,
        ..scope!(
            "accounting.transactions.read",
            Read,
            Deprecated,
            "Accounting",
            [],
            [
                "accounting.invoices.read",
                "accounting.payments.read",
                "accounting.banktransactions.read",
                "accounting.manualjournals.read",
                "accounting.classicexpenses.read",
            ]
        )
    },
    Scope {
        paths: REPORTS,
        ..scope!(
            "accounting.reports.read",
            Read,
            Deprecated,
            "Accounting reports",
            [],
            [
                "accounting.reports.aged.read",
                "accounting.reports.balancesheet.read",
                "accounting.reports.profitandloss.read",
                "accounting.reports.trialbalance.read",
                "accounting.reports.banksummary.read",
                "accounting.reports.budgetsummary.read",
                "accounting.reports.executivesummary.read",
                "accounting.reports.taxreports.read",
            ]
        )
    },
    // The granular accounting scopes [S2] (names), [S3] (endpoints).
    Scope { paths: INVOICES, ..scope!("accounting.invoices", Write, Granular, "Accounting", []) },
    Scope { paths: INVOICES, ..scope!("accounting.invoices.read", Read, Granular, "Accounting", []) },
    Scope { paths: PAYMENTS, ..scope!("accounting.payments", Write, Granular, "Accounting", []) },
    Scope { paths: PAYMENTS, ..scope!("accounting.payments.read", Read, Granular, "Accounting", []) },
    Scope {
        paths: BANKTRANSACTIONS,
        ..scope!("accounting.banktransactions", Write, Granular, "Accounting", [])
    },
    Scope {
        paths: BANKTRANSACTIONS,
        ..scope!("accounting.banktransactions.read", Read, Granular, "Accounting", [])
    },
    Scope {
        paths: MANUALJOURNALS,
        ..scope!("accounting.manualjournals", Write, Granular, "Accounting", [])
    },
    Scope {
        paths: MANUALJOURNALS,
        ..scope!("accounting.manualjournals.read", Read, Granular, "Accounting", [])
    },
    Scope {
        paths: CLASSICEXPENSES,
        ..scope!("accounting.classicexpenses", Write, Granular, "Accounting", [])
    },
    Scope {
        paths: CLASSICEXPENSES,
        ..scope!("accounting.classicexpenses.read", Read, Granular, "Accounting", [])
    },
    scope!(
        "accounting.reports.aged.read",
        Read,
        Granular,
        "Accounting reports",
        [
            "/api.xro/2.0/Reports/AgedPayablesByContact",
            "/api.xro/2.0/Reports/AgedReceivablesByContact"
        ]
    ),
    scope!(
        "accounting.reports.balancesheet.read",
        Read,
        Granular,
        "Accounting reports",
        ["/api.xro/2.0/Reports/BalanceSheet"]
    ),
    scope!(
        "accounting.reports.profitandloss.read",
        Read,
        Granular,
        "Accounting reports",
        ["/api.xro/2.0/Reports/ProfitAndLoss"]
    ),
    scope!(
        "accounting.reports.trialbalance.read",
        Read,
        Granular,
        "Accounting reports",
        ["/api.xro/2.0/Reports/TrialBalance"]
    ),
    // [S4]: not confirmed by a list Xero publishes.
    Scope {
        confirmed: false,
        ..scope!(
            "accounting.reports.banksummary.read",
            Read,
            Granular,
            "Accounting reports",
            ["/api.xro/2.0/Reports/BankSummary"]
        )
    },
    Scope {
        confirmed: false,
        ..scope!(
            "accounting.reports.budgetsummary.read",
            Read,
            Granular,
            "Accounting reports",
            ["/api.xro/2.0/Reports/BudgetSummary"]
        )
    },
    Scope {
        confirmed: false,
        ..scope!(
            "accounting.reports.executivesummary.read",
            Read,
            Granular,
            "Accounting reports",
            ["/api.xro/2.0/Reports/ExecutiveSummary"]
        )
    },
    Scope {
        confirmed: false,
        ..scope!(
            "accounting.reports.taxreports.read",
            Read,
            Granular,
            "Accounting reports",
            [
                "/api.xro/2.0/Reports/BASReport",
                "/api.xro/2.0/Reports/GSTReport",
                "/api.xro/2.0/Reports/TenNinetyNine"
            ]
        )
    },
    // Accounting scopes the move leaves as they are [S1], [S3].
    Scope { paths: SETTINGS, ..scope!("accounting.settings", Write, Unchanged, "Accounting", []) },
    Scope {
        paths: SETTINGS,
        ..scope!("accounting.settings.read", Read, Unchanged, "Accounting", [])
    },
    Scope { paths: CONTACTS, ..scope!("accounting.contacts", Write, Unchanged, "Accounting", []) },
    Scope {
        paths: CONTACTS,
        ..scope!("accounting.contacts.read", Read, Unchanged, "Accounting", [])
    },
    Scope {
        paths: ATTACHMENTS,
        ..scope!("accounting.attachments", Write, Unchanged, "Accounting", [])
    },
    Scope {
        paths: ATTACHMENTS,
        ..scope!("accounting.attachments.read", Read, Unchanged, "Accounting", [])
    },
    scope!("accounting.budgets.read", Read, Unchanged, "Accounting", ["/api.xro/2.0/Budgets"]),
    // Journals need Xero's top (Advanced) plan from 2026 [S3].
    scope!("accounting.journals.read", Read, Unchanged, "Accounting", ["/api.xro/2.0/Journals"]),
    // Payroll [S1], [S2]: the AU API (`payroll.xro/1.0`) and the NZ/UK one (`payroll.xro/2.0`).
    scope!(
        "payroll.employees",
        Write,
        Unchanged,
        "Payroll",
        ["/payroll.xro/1.0/Employees", "/payroll.xro/2.0/Employees"]
    ),
    scope!(
        "payroll.employees.read",
        Read,
        Unchanged,
        "Payroll",
        ["/payroll.xro/1.0/Employees", "/payroll.xro/2.0/Employees"]
    ),
    scope!(
        "payroll.payruns",
        Write,
        Unchanged,
        "Payroll",
        ["/payroll.xro/1.0/PayRuns", "/payroll.xro/2.0/PayRuns"]
    ),
    scope!(
        "payroll.payruns.read",
        Read,
        Unchanged,
        "Payroll",
        ["/payroll.xro/1.0/PayRuns", "/payroll.xro/2.0/PayRuns"]
    ),
    scope!(
        "payroll.payslip",
        Write,
        Unchanged,
        "Payroll",
        ["/payroll.xro/1.0/Payslip", "/payroll.xro/2.0/PaySlips"]
    ),
    scope!(
        "payroll.payslip.read",
        Read,
        Unchanged,
        "Payroll",
        ["/payroll.xro/1.0/Payslip", "/payroll.xro/2.0/PaySlips"]
    ),
    scope!(
        "payroll.timesheets",
        Write,
        Unchanged,
        "Payroll",
        ["/payroll.xro/1.0/Timesheets", "/payroll.xro/2.0/Timesheets"]
    ),
    scope!(
        "payroll.timesheets.read",
        Read,
        Unchanged,
        "Payroll",
        ["/payroll.xro/1.0/Timesheets", "/payroll.xro/2.0/Timesheets"]
    ),
    scope!(
        "payroll.settings",
        Write,
        Unchanged,
        "Payroll",
        [
            "/payroll.xro/1.0/PayItems",
            "/payroll.xro/1.0/PayrollCalendars",
            "/payroll.xro/1.0/SuperFunds",
            "/payroll.xro/1.0/SuperFundProducts",
            "/payroll.xro/2.0/Settings",
            "/payroll.xro/2.0/PayRunCalendars",
            "/payroll.xro/2.0/EarningsRates",
            "/payroll.xro/2.0/LeaveTypes",
        ]
    ),
    scope!(
        "payroll.settings.read",
        Read,
        Unchanged,
        "Payroll",
        [
            "/payroll.xro/1.0/PayItems",
            "/payroll.xro/1.0/PayrollCalendars",
            "/payroll.xro/1.0/SuperFunds",
            "/payroll.xro/1.0/SuperFundProducts",
            "/payroll.xro/2.0/Settings",
            "/payroll.xro/2.0/PayRunCalendars",
            "/payroll.xro/2.0/EarningsRates",
            "/payroll.xro/2.0/LeaveTypes",
        ]
    ),
    // Files, assets, projects [S1].
    scope!("files", Write, Unchanged, "Files", ["/files.xro/1.0"]),
    scope!("files.read", Read, Unchanged, "Files", ["/files.xro/1.0"]),
    scope!("assets", Write, Unchanged, "Assets", ["/assets.xro/1.0"]),
    scope!("assets.read", Read, Unchanged, "Assets", ["/assets.xro/1.0"]),
    scope!("projects", Write, Unchanged, "Projects", ["/projects.xro/2.0"]),
    scope!("projects.read", Read, Unchanged, "Projects", ["/projects.xro/2.0"]),
];

/// A name `login --scope` accepts that stands for several scopes: the granular set an app created
/// today can ask for. Journals (`accounting.journals.read`) are in none of them: they need Xero's
/// top plan, and an app without it is refused the scope.
pub struct Shorthand {
    pub name: &'static str,
    pub means: &'static [&'static str],
    pub about: &'static str,
}

pub static SHORTHANDS: &[Shorthand] = &[
    Shorthand {
        name: "accounting.read",
        means: &[
            "accounting.invoices.read",
            "accounting.payments.read",
            "accounting.banktransactions.read",
            "accounting.manualjournals.read",
            "accounting.contacts.read",
            "accounting.settings.read",
            "accounting.attachments.read",
            "accounting.budgets.read",
            "accounting.reports.aged.read",
            "accounting.reports.balancesheet.read",
            "accounting.reports.profitandloss.read",
            "accounting.reports.trialbalance.read",
        ],
        about: "read every accounting area and the reports Xero lists (no journals)",
    },
    Shorthand {
        name: "accounting",
        means: &[
            "accounting.invoices",
            "accounting.payments",
            "accounting.banktransactions",
            "accounting.manualjournals",
            "accounting.contacts",
            "accounting.settings",
            "accounting.attachments",
            "accounting.budgets.read",
            "accounting.reports.aged.read",
            "accounting.reports.balancesheet.read",
            "accounting.reports.profitandloss.read",
            "accounting.reports.trialbalance.read",
        ],
        about: "read and write every accounting area, read the reports Xero lists (no journals)",
    },
    Shorthand {
        name: "accounting.reports",
        means: &[
            "accounting.reports.aged.read",
            "accounting.reports.balancesheet.read",
            "accounting.reports.profitandloss.read",
            "accounting.reports.trialbalance.read",
        ],
        about: "the granular report scopes Xero lists",
    },
    Shorthand {
        name: "payroll.read",
        means: &[
            "payroll.employees.read",
            "payroll.payruns.read",
            "payroll.payslip.read",
            "payroll.timesheets.read",
            "payroll.settings.read",
        ],
        about: "read every payroll area",
    },
    Shorthand {
        name: "payroll",
        means: &[
            "payroll.employees",
            "payroll.payruns",
            "payroll.payslip",
            "payroll.timesheets",
            "payroll.settings",
        ],
        about: "read and write every payroll area",
    },
];

/// The table's entry for `name`.
pub fn find(name: &str) -> Option<&'static Scope> {
    SCOPES.iter().find(|s| s.name == name)
}

/// The shorthand called `name`.
pub fn shorthand(name: &str) -> Option<&'static Shorthand> {
    SHORTHANDS.iter().find(|s| s.name == name)
}

/// What a name given to `login --scope` is.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    /// A scope in the table.
    Known(&'static Scope),
    /// A shorthand: the scopes it stands for.
    Shorthand(&'static Shorthand),
    /// So close to a known name that it is taken for a typo of it: an error.
    Typo { closest: &'static str },
    /// Not in the table and not close to a name in it: perhaps a scope Xero added since. Sent as
    /// it is, with a warning naming the closest known name.
    Unknown { closest: Option<&'static str> },
}

impl PartialEq for Scope {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for Scope {}
impl PartialEq for Shorthand {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for Shorthand {}
impl std::fmt::Debug for Shorthand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Shorthand").field(&self.name).finish()
    }
}

/// Looks `name` up in the table and the shorthands.
pub fn check(name: &str) -> Checked {
    if let Some(scope) = find(name) {
        return Checked::Known(scope);
    }
    if let Some(short) = shorthand(name) {
        return Checked::Shorthand(short);
    }
    let lower = name.to_ascii_lowercase();
    let names = || SCOPES.iter().map(|s| s.name).chain(SHORTHANDS.iter().map(|s| s.name));
    // Xero's names are lower case: the same name in other case is a typo of it.
    if let Some(same) = names().find(|n| *n == lower) {
        return Checked::Typo { closest: same };
    }
    // A write scope that exists only for reading (`accounting.budgets`), or the reverse.
    let twin = match lower.strip_suffix(".read") {
        Some(write) => write.to_owned(),
        None => format!("{lower}.read"),
    };
    if let Some(twin) = find(&twin) {
        return Checked::Typo { closest: twin.name };
    }
    let nearest = names()
        .map(|n| (strsim::levenshtein(&lower, n), n))
        .min_by_key(|(distance, _)| *distance);
    match nearest {
        // Two edits at most, on a name long enough that two edits do not make any word a typo.
        Some((distance, n)) if distance <= 2 && lower.len() > distance * 3 => {
            Checked::Typo { closest: n }
        }
        _ => Checked::Unknown {
            closest: names()
                .map(|n| (strsim::jaro_winkler(&lower, n), n))
                .filter(|(similarity, _)| *similarity >= 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, n)| n),
        },
    }
}

/// `names` with each shorthand replaced by what it stands for, in order, without repeats.
/// Names that are neither (known or not) stay as they are.
pub fn expand<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let parts: Vec<&str> = match shorthand(name) {
            Some(short) => short.means.to_vec(),
            None => vec![name],
        };
        for part in parts {
            if !out.iter().any(|o| o == part) {
                out.push(part.to_owned());
            }
        }
    }
    out
}

/// The deprecated broad scopes among `names`.
pub fn deprecated<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<&'static Scope> {
    names.into_iter().filter_map(find).filter(|s| s.kind == Kind::Deprecated).collect()
}

/// `names` with each deprecated broad scope replaced by its granular replacements, in order,
/// without repeats: the set an app created today asks for instead. Replacements Xero does not
/// list itself ([S4]) are left out: a name Xero does not know fails the whole request. A write
/// scope's replacements make its `.read` twin's redundant, so those are dropped.
pub fn granular_equivalent<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let parts: Vec<&str> = match find(name) {
            Some(s) if s.kind == Kind::Deprecated => s
                .replaced_by
                .iter()
                .copied()
                .filter(|r| find(r).is_some_and(|r| r.confirmed))
                .collect(),
            _ => vec![name],
        };
        for part in parts {
            if !out.iter().any(|o| o == part) {
                out.push(part.to_owned());
            }
        }
    }
    let has = |n: &str| out.iter().any(|o| o == n);
    let redundant: Vec<String> = out
        .iter()
        .filter(|n| n.strip_suffix(".read").is_some_and(&has))
        .cloned()
        .collect();
    out.retain(|n| !redundant.contains(n));
    out
}

/// The calls Xero's MCP server (`@xeroapi/xero-mcp-server` 0.0.17, the version the tests pin)
/// makes for each of its tools: method and path, from its `dist/tools` (the names) and
/// `dist/handlers` (the xero-node `accountingApi` and `payrollNZApi` methods each tool calls). `*` stands for an id. The bridge
/// (`mcp`) names the scope a refused tool needed from this.
const MCP_TOOLS: &[(&str, &str, &str)] = &[
    ("list-accounts", "GET", "/api.xro/2.0/Accounts"),
    ("list-aged-payables-by-contact", "GET", "/api.xro/2.0/Reports/AgedPayablesByContact"),
    ("list-aged-receivables-by-contact", "GET", "/api.xro/2.0/Reports/AgedReceivablesByContact"),
    ("list-bank-transactions", "GET", "/api.xro/2.0/BankTransactions"),
    ("list-contact-groups", "GET", "/api.xro/2.0/ContactGroups"),
    ("list-contacts", "GET", "/api.xro/2.0/Contacts"),
    ("list-credit-notes", "GET", "/api.xro/2.0/CreditNotes"),
    ("list-invoices", "GET", "/api.xro/2.0/Invoices"),
    ("list-items", "GET", "/api.xro/2.0/Items"),
    ("list-manual-journals", "GET", "/api.xro/2.0/ManualJournals"),
    ("list-organisation-details", "GET", "/api.xro/2.0/Organisation"),
    ("list-payments", "GET", "/api.xro/2.0/Payments"),
    ("list-profit-and-loss", "GET", "/api.xro/2.0/Reports/ProfitAndLoss"),
    ("list-quotes", "GET", "/api.xro/2.0/Quotes"),
    ("list-report-balance-sheet", "GET", "/api.xro/2.0/Reports/BalanceSheet"),
    ("list-tax-rates", "GET", "/api.xro/2.0/TaxRates"),
    ("list-tracking-categories", "GET", "/api.xro/2.0/TrackingCategories"),
    ("list-trial-balance", "GET", "/api.xro/2.0/Reports/TrialBalance"),
    ("create-bank-transaction", "PUT", "/api.xro/2.0/BankTransactions"),
    ("create-contact", "PUT", "/api.xro/2.0/Contacts"),
    ("create-credit-note", "PUT", "/api.xro/2.0/CreditNotes"),
    ("create-invoice", "PUT", "/api.xro/2.0/Invoices"),
    ("create-item", "PUT", "/api.xro/2.0/Items"),
    ("create-manual-journal", "PUT", "/api.xro/2.0/ManualJournals"),
    ("create-payment", "PUT", "/api.xro/2.0/Payments"),
    ("create-quote", "PUT", "/api.xro/2.0/Quotes"),
    ("create-tracking-category", "PUT", "/api.xro/2.0/TrackingCategories"),
    ("create-tracking-options", "PUT", "/api.xro/2.0/TrackingCategories/*/Options"),
    ("update-bank-transaction", "POST", "/api.xro/2.0/BankTransactions/*"),
    ("update-contact", "POST", "/api.xro/2.0/Contacts/*"),
    ("update-credit-note", "POST", "/api.xro/2.0/CreditNotes/*"),
    ("update-invoice", "POST", "/api.xro/2.0/Invoices/*"),
    ("update-item", "POST", "/api.xro/2.0/Items/*"),
    ("update-manual-journal", "POST", "/api.xro/2.0/ManualJournals/*"),
    ("update-quote", "POST", "/api.xro/2.0/Quotes/*"),
    ("update-tracking-category", "POST", "/api.xro/2.0/TrackingCategories/*"),
    ("update-tracking-options", "POST", "/api.xro/2.0/TrackingCategories/*/Options/*"),
    ("list-payroll-employees", "GET", "/payroll.xro/2.0/Employees"),
    ("list-payroll-employee-leave", "GET", "/payroll.xro/2.0/Employees/*/Leave"),
    ("list-payroll-employee-leave-balances", "GET", "/payroll.xro/2.0/Employees/*/LeaveBalances"),
    ("list-payroll-employee-leave-types", "GET", "/payroll.xro/2.0/Employees/*/LeaveTypes"),
    ("list-payroll-leave-periods", "GET", "/payroll.xro/2.0/Employees/*/LeavePeriods"),
    ("list-payroll-leave-types", "GET", "/payroll.xro/2.0/LeaveTypes"),
    ("list-timesheets", "GET", "/payroll.xro/2.0/Timesheets"),
    ("get-timesheet", "GET", "/payroll.xro/2.0/Timesheets/*"),
    ("create-timesheet", "POST", "/payroll.xro/2.0/Timesheets"),
    ("add-timesheet-line", "POST", "/payroll.xro/2.0/Timesheets/*/Lines"),
    ("update-timesheet-line", "PUT", "/payroll.xro/2.0/Timesheets/*/Lines/*"),
    ("approve-timesheet", "POST", "/payroll.xro/2.0/Timesheets/*/Approve"),
    ("revert-timesheet", "POST", "/payroll.xro/2.0/Timesheets/*/RevertToDraft"),
    ("delete-timesheet", "DELETE", "/payroll.xro/2.0/Timesheets/*"),
];

/// The sentence that says `deprecated` are broad scopes Xero is retiring, and the dates of the
/// move: said once, the same way, by `login` and `scopes`.
pub fn retiring(deprecated: &[&Scope]) -> String {
    let names: Vec<&str> = deprecated.iter().map(|s| s.name).collect();
    let d = &DEPRECATION;
    format!(
        "{} {} Xero is retiring: apps created from {} (custom connections from {}) are given \
         only granular scopes, and older apps must move to them by {}",
        names.join(", "),
        if names.len() == 1 {
            "is a broad scope"
        } else {
            "are broad scopes"
        },
        d.new_apps_from,
        d.custom_connections_from,
        d.existing_apps_until
    )
}

/// Of the scopes `needed` for a call of `method` (from [`needed_for`]), the narrowest that works
/// today — granular or unchanged, and a read scope for a read — for the `login --scope` a message
/// suggests; a deprecated one only when nothing else opens the path.
pub fn narrowest(needed: &[&'static Scope], method: &str) -> Option<&'static Scope> {
    let reading = method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD");
    let current = || needed.iter().copied().filter(|s| s.kind != Kind::Deprecated);
    current()
        .find(|s| reading && s.access == Access::Read)
        .or_else(|| current().next())
        .or_else(|| needed.first().copied())
}

/// The call Xero's MCP server makes for `tool` (method and path, `*` for an id) and the scopes
/// any one of which lets it through; `None` for a tool the table does not know.
pub fn needed_for_tool(tool: &str) -> Option<(&'static str, &'static str, Vec<&'static Scope>)> {
    let (_, method, path) = MCP_TOOLS.iter().find(|(name, _, _)| *name == tool)?;
    Some((method, path, needed_for(path, method)))
}

/// Whether `path` (a request's path, without query) is one of `prefix`'s: compared segment by
/// segment, without regard to case, `*` in the prefix matching any one segment.
fn path_matches(prefix: &str, path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut have = path.split('/').filter(|s| !s.is_empty());
    prefix
        .split('/')
        .filter(|s| !s.is_empty())
        .all(|want| have.next().is_some_and(|seg| want == "*" || seg.eq_ignore_ascii_case(want)))
}

/// The scopes any one of which lets a call of `method` to `path` through, granular first, then
/// unchanged, then deprecated: a read scope for `GET` (and `HEAD`), a write scope for any method.
/// Empty when the table knows no scope for the path (`/connections` needs none beyond the token).
/// `path` is the path under the API's host (`/api.xro/2.0/Invoices`, with or without the first
/// slash, or the whole URL), or one without the API's prefix (`Invoices`), which is taken as the
/// accounting API's.
pub fn needed_for(path: &str, method: &str) -> Vec<&'static Scope> {
    // A whole URL: its path.
    let path = match path.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map_or("", |(_, p)| p),
        None => path,
    };
    let full;
    let path = if path.starts_with('/') || path.contains(".xro/") {
        path
    } else {
        full = format!("{ACC}/{path}");
        &full
    };
    let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
    let reading = method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD");
    let matching = |s: &&Scope| {
        s.access != Access::Identity
            && (reading || s.access == Access::Write)
            && s.paths.iter().any(|p| path_matches(p, &path))
    };
    // The most specific prefix wins: `Reports/BalanceSheet` over `Reports` within one kind is
    // not needed (both grant), but attachments' `*/*/Attachments` must beat `Invoices`.
    let attachment = SCOPES
        .iter()
        .filter(|s| s.paths == ATTACHMENTS)
        .any(|s| s.paths.iter().any(|p| path_matches(p, &path)));
    let mut out: Vec<&'static Scope> = SCOPES
        .iter()
        .filter(matching)
        .filter(|s| !attachment || s.paths == ATTACHMENTS)
        .collect();
    out.sort_by_key(|s| match s.kind {
        Kind::Granular => 0,
        Kind::Unchanged => 1,
        Kind::Deprecated => 2,
    });
    out
}

/// Whether `granted` includes one of the scopes a call needs (true when it needs none known).
pub fn grants(granted: &[String], needed: &[&Scope]) -> bool {
    needed.is_empty() || needed.iter().any(|s| granted.iter().any(|g| g == s.name))
}

#[cfg(test)]
mod tests {

    #[test]
    fn every_tool_of_xeros_mcp_server_maps_to_a_scope_of_its_kind() {
        for (tool, _, _) in MCP_TOOLS {
            let (method, path, needed) = needed_for_tool(tool).expect("listed");
            assert!(!needed.is_empty(), "{tool}: {method} {path} opens no scope");
            let reads = tool.starts_with("list-") || tool.starts_with("get-");
            // 51 tools in 0.0.17.
            assert_eq!(reads, method == "GET", "{tool}: {method}");
            if !reads {
                assert!(
                    needed.iter().all(|s| s.access == Access::Write),
                    "{tool}: a write tool must need a write scope"
                );
            }
        }
        assert_eq!(MCP_TOOLS.len(), 51);
        let (method, _, invoices) = needed_for_tool("list-invoices").unwrap();
        assert_eq!(
            narrowest(&invoices, method).map(|s| s.name),
            Some("accounting.invoices.read")
        );
        let (method, _, contact) = needed_for_tool("create-contact").unwrap();
        assert_eq!(
            narrowest(&contact, method).map(|s| s.name),
            Some("accounting.contacts")
        );
        assert!(needed_for_tool("make-coffee").is_none());
    }

    #[test]
    fn the_narrowest_scope_is_a_current_read_scope_for_a_read() {
        let read = needed_for("/payroll.xro/2.0/Timesheets", "GET");
        assert_eq!(narrowest(&read, "GET").map(|s| s.name), Some("payroll.timesheets.read"));
        let write = needed_for("/payroll.xro/2.0/Timesheets", "POST");
        assert_eq!(narrowest(&write, "POST").map(|s| s.name), Some("payroll.timesheets"));
        let invoices = needed_for("Invoices", "GET");
        assert_eq!(narrowest(&invoices, "get").map(|s| s.name), Some("accounting.invoices.read"));
        assert_eq!(narrowest(&[], "GET").map(|s| s.name), None);
    }

    use super::*;

    #[test]
    fn every_name_is_once_in_the_table_and_in_xeros_form() {
        let mut names: Vec<&str> = SCOPES.iter().map(|s| s.name).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "a scope is in the table twice");
        for s in SCOPES {
            assert!(
                s.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_'),
                "{}",
                s.name
            );
            assert_eq!(s.access == Access::Read, s.name.ends_with(".read"), "{}", s.name);
            assert_eq!(s.access == Access::Identity, s.paths.is_empty(), "{}", s.name);
            for p in s.paths {
                assert!(p.starts_with('/') && p.contains(".xro/"), "{p}");
            }
        }
        for sh in SHORTHANDS {
            assert!(find(sh.name).is_none(), "shorthand {} hides a scope", sh.name);
        }
    }

    #[test]
    fn deprecated_scopes_name_granular_replacements_that_cover_their_paths() {
        let deprecated: Vec<&Scope> =
            SCOPES.iter().filter(|s| s.kind == Kind::Deprecated).collect();
        let names: Vec<&str> = deprecated.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            ["accounting.transactions", "accounting.transactions.read", "accounting.reports.read"]
        );
        for s in deprecated {
            for r in s.replaced_by {
                let r = find(r).unwrap_or_else(|| panic!("{} is not in the table", r));
                assert_eq!(r.kind, Kind::Granular, "{}", r.name);
                assert_eq!(r.access, s.access, "{} replaces {}", r.name, s.name);
            }
            // Every path of the broad scope is opened by one of its replacements.
            for p in s.paths {
                if *p == "/api.xro/2.0/Reports" {
                    continue; // the report scopes each open one report
                }
                assert!(
                    s.replaced_by.iter().filter_map(|r| find(r)).any(|r| r.paths.contains(p)),
                    "{p} of {} is not covered",
                    s.name
                );
            }
        }
        for s in SCOPES.iter().filter(|s| s.kind != Kind::Deprecated) {
            assert!(s.replaced_by.is_empty(), "{}", s.name);
        }
    }

    #[test]
    fn shorthands_stand_for_granular_or_unchanged_scopes_in_the_table() {
        for sh in SHORTHANDS {
            for m in sh.means {
                let s = find(m).unwrap_or_else(|| panic!("{m} of {} is not in the table", sh.name));
                assert_ne!(s.kind, Kind::Deprecated, "{m}");
                assert!(s.confirmed, "{m}: a shorthand asks only for names Xero lists");
                assert_ne!(s.name, "accounting.journals.read");
            }
        }
        assert!(
            shorthand("accounting.read").unwrap().means.iter().all(|m| m.ends_with(".read"))
        );
    }

    #[test]
    fn check_tells_typos_from_unknown_names() {
        assert!(matches!(check("accounting.invoices"), Checked::Known(s) if s.kind == Kind::Granular));
        assert!(matches!(check("accounting.read"), Checked::Shorthand(_)));
        assert_eq!(check("accounting.invoice"), Checked::Typo { closest: "accounting.invoices" });
        assert_eq!(
            check("accounting.transaction"),
            Checked::Typo { closest: "accounting.transactions" }
        );
        assert_eq!(check("offline-access"), Checked::Typo { closest: "offline_access" });
        assert_eq!(check("Accounting.Contacts"), Checked::Typo { closest: "accounting.contacts" });
        assert_eq!(
            check("accounting.budgets"),
            Checked::Typo { closest: "accounting.budgets.read" }
        );
        // A name Xero may have added: sent, with the closest name for a warning.
        assert_eq!(
            check("accounting.einvoicing"),
            Checked::Unknown { closest: Some("accounting.invoices") }
        );
        assert_eq!(check("zzz"), Checked::Unknown { closest: None });
        // Short names: two edits make anything into anything, so no typo.
        assert!(matches!(check("fils"), Checked::Typo { closest: "files" }));
        assert!(matches!(check("xy"), Checked::Unknown { .. }));
    }

    #[test]
    fn expand_replaces_shorthands_in_order_without_repeats() {
        let out = expand(["openid", "accounting.reports", "accounting.reports.aged.read", "x.y"]);
        assert_eq!(
            out,
            [
                "openid",
                "accounting.reports.aged.read",
                "accounting.reports.balancesheet.read",
                "accounting.reports.profitandloss.read",
                "accounting.reports.trialbalance.read",
                "x.y",
            ]
        );
    }

    #[test]
    fn the_granular_equivalent_of_a_broad_set() {
        let broad = "openid profile email accounting.transactions accounting.transactions.read \
                     accounting.contacts offline_access";
        assert_eq!(deprecated(broad.split(' ')).len(), 2);
        let out = granular_equivalent(broad.split(' '));
        assert_eq!(
            out,
            [
                "openid",
                "profile",
                "email",
                "accounting.invoices",
                "accounting.payments",
                "accounting.banktransactions",
                "accounting.manualjournals",
                "accounting.classicexpenses",
                "accounting.contacts",
                "offline_access",
            ]
        );
        assert!(deprecated(out.iter().map(String::as_str)).is_empty());
        // Unknown names stay.
        assert_eq!(granular_equivalent(["new.scope"]), ["new.scope"]);
        // Only the report scopes Xero lists.
        assert_eq!(
            granular_equivalent(["accounting.reports.read"]),
            [
                "accounting.reports.aged.read",
                "accounting.reports.balancesheet.read",
                "accounting.reports.profitandloss.read",
                "accounting.reports.trialbalance.read",
            ]
        );
    }

    fn names(v: Vec<&Scope>) -> Vec<&str> {
        v.into_iter().map(|s| s.name).collect()
    }

    #[test]
    fn needed_for_a_read_and_a_write_call() {
        assert_eq!(
            names(needed_for("/api.xro/2.0/Invoices", "GET")),
            [
                "accounting.invoices",
                "accounting.invoices.read",
                "accounting.transactions",
                "accounting.transactions.read"
            ]
        );
        assert_eq!(
            names(needed_for("/api.xro/2.0/invoices/abc?page=2", "post")),
            ["accounting.invoices", "accounting.transactions"]
        );
        // Without the API's prefix, the accounting API's.
        assert_eq!(
            names(needed_for("Contacts", "PUT")),
            ["accounting.contacts"]
        );
        assert_eq!(
            names(needed_for("/api.xro/2.0/Reports/BalanceSheet", "GET")),
            ["accounting.reports.balancesheet.read", "accounting.reports.read"]
        );
        // Items: through invoices or settings.
        assert_eq!(
            names(needed_for("Items", "POST")),
            ["accounting.invoices", "accounting.settings"]
        );
        assert_eq!(
            names(needed_for("/api.xro/2.0/Invoices/abc/Attachments/x.pdf", "GET")),
            ["accounting.attachments", "accounting.attachments.read"]
        );
        assert!(needed_for("/connections", "GET").is_empty());
        assert_eq!(
            names(needed_for("https://api.xero.com/api.xro/2.0/Contacts/x", "GET")),
            names(needed_for("api.xro/2.0/Contacts", "GET"))
        );
        assert!(needed_for("/api.xro/2.0/Reports/BalanceSheet", "POST").is_empty());
        assert_eq!(
            names(needed_for("/payroll.xro/2.0/Employees", "GET")),
            ["payroll.employees", "payroll.employees.read"]
        );
    }

    #[test]
    fn grants_checks_the_set_against_the_alternatives() {
        let set: Vec<String> = vec!["accounting.invoices.read".into()];
        assert!(grants(&set, &needed_for("Invoices", "GET")));
        assert!(!grants(&set, &needed_for("Invoices", "POST")));
        assert!(grants(&set, &needed_for("/connections", "DELETE")));
    }
}
