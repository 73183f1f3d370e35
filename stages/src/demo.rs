//! The synthetic demo data set: a small ISCO-08 reference and noisy "historical records"
//! written by this generator (nothing is copied from any external data set).
//!
//! `isco-dag demo` writes `data/raw/historical_records.csv`,
//! `data/reference/isco08_demo.csv`, `data/demo/new_jobs.csv`,
//! `data/demo/records_truth.csv` (which labels the generator made wrong),
//! `data/demo/corrections_demo.csv` (coders' corrections for four occupations the records
//! never show) and `data/demo/new_occupations_eval.csv` (held-out titles of those); the tests call
//! [`generate`] for their fixtures. The records mimic what an office's coded archive looks
//! like: a Zipf-skewed mix of occupations, title variants with case changes, abbreviations,
//! prefixes and typos, duties that are sometimes truncated or missing, about 3 % wrong
//! labels (mostly a sibling in the same minor group), and a handful of unusable rows
//! (invalid or unknown codes, empty text, a malformed line) for the quarantine.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use classifier::Rng;

use crate::error::Error;

/// One demo occupation: unit group code and title, job titles, duty phrases.
struct Occ {
    code: &'static str,
    title: &'static str,
    jobs: &'static [&'static str],
    duties: &'static [&'static str],
}

const MAJOR: &[(&str, &str)] = &[
    ("0", "Armed forces occupations"),
    ("1", "Managers"),
    ("2", "Professionals"),
    ("3", "Technicians and associate professionals"),
    ("4", "Clerical support workers"),
    ("5", "Service and sales workers"),
    ("6", "Skilled agricultural, forestry and fishery workers"),
    ("7", "Craft and related trades workers"),
    ("8", "Plant and machine operators, and assemblers"),
    ("9", "Elementary occupations"),
];

/// Every ISCO-08 sub-major group, so a code that falls back to two digits has a title.
const SUB_MAJOR: &[(&str, &str)] = &[
    ("01", "Commissioned armed forces officers"),
    ("02", "Non-commissioned armed forces officers"),
    ("03", "Armed forces occupations, other ranks"),
    ("11", "Chief executives, senior officials and legislators"),
    ("12", "Administrative and commercial managers"),
    ("13", "Production and specialised services managers"),
    ("14", "Hospitality, retail and other services managers"),
    ("21", "Science and engineering professionals"),
    ("22", "Health professionals"),
    ("23", "Teaching professionals"),
    ("24", "Business and administration professionals"),
    (
        "25",
        "Information and communications technology professionals",
    ),
    ("26", "Legal, social and cultural professionals"),
    ("31", "Science and engineering associate professionals"),
    ("32", "Health associate professionals"),
    ("33", "Business and administration associate professionals"),
    (
        "34",
        "Legal, social, cultural and related associate professionals",
    ),
    ("35", "Information and communications technicians"),
    ("41", "General and keyboard clerks"),
    ("42", "Customer services clerks"),
    ("43", "Numerical and material recording clerks"),
    ("44", "Other clerical support workers"),
    ("51", "Personal service workers"),
    ("52", "Sales workers"),
    ("53", "Personal care workers"),
    ("54", "Protective services workers"),
    ("61", "Market-oriented skilled agricultural workers"),
    (
        "62",
        "Market-oriented skilled forestry, fishery and hunting workers",
    ),
    ("63", "Subsistence farmers, fishers, hunters and gatherers"),
    (
        "71",
        "Building and related trades workers, excluding electricians",
    ),
    ("72", "Metal, machinery and related trades workers"),
    ("73", "Handicraft and printing workers"),
    ("74", "Electrical and electronic trades workers"),
    (
        "75",
        "Food processing, wood working, garment and other craft and related trades workers",
    ),
    ("81", "Stationary plant and machine operators"),
    ("82", "Assemblers"),
    ("83", "Drivers and mobile plant operators"),
    ("91", "Cleaners and helpers"),
    ("92", "Agricultural, forestry and fishery labourers"),
    (
        "93",
        "Labourers in mining, construction, manufacturing and transport",
    ),
    ("94", "Food preparation assistants"),
    ("95", "Street and related sales and service workers"),
    ("96", "Refuse workers and other elementary workers"),
];

/// The ISCO-08 minor groups of the demo's unit groups, so a code that falls back to three
/// digits has a title.
const MINOR: &[(&str, &str)] = &[
    ("011", "Commissioned armed forces officers"),
    ("112", "Managing directors and chief executives"),
    ("121", "Business services and administration managers"),
    (
        "214",
        "Engineering professionals (excluding electrotechnology)",
    ),
    ("216", "Architects, planners, surveyors and designers"),
    ("221", "Medical doctors"),
    ("222", "Nursing and midwifery professionals"),
    ("231", "University and higher education teachers"),
    ("233", "Secondary education teachers"),
    ("234", "Primary school and early childhood teachers"),
    ("241", "Finance professionals"),
    ("251", "Software and applications developers and analysts"),
    ("261", "Legal professionals"),
    ("322", "Nursing and midwifery associate professionals"),
    ("325", "Other health associate professionals"),
    ("331", "Financial and mathematical associate professionals"),
    ("333", "Business services agents"),
    ("411", "General office clerks"),
    ("412", "Secretaries (general)"),
    ("422", "Client information workers"),
    ("431", "Numerical clerks"),
    ("512", "Cooks"),
    ("513", "Waiters and bartenders"),
    ("514", "Hairdressers, beauticians and related workers"),
    ("522", "Shop salespersons"),
    ("523", "Cashiers and ticket clerks"),
    ("532", "Personal care workers in health services"),
    ("541", "Protective services workers"),
    ("611", "Market gardeners and crop growers"),
    ("711", "Building frame and related trades workers"),
    ("712", "Building finishers and related trades workers"),
    ("723", "Machinery mechanics and repairers"),
    ("741", "Electrical equipment installers and repairers"),
    ("751", "Food processing and related trades workers"),
    ("832", "Car, van and motorcycle drivers"),
    ("833", "Heavy truck and bus drivers"),
    ("911", "Domestic, hotel and office cleaners and helpers"),
    ("921", "Agricultural, forestry and fishery labourers"),
    ("941", "Food preparation assistants"),
];

const OCCS: &[Occ] = &[
    Occ {
        code: "2512",
        title: "Software developers",
        jobs: &[
            "software developer",
            "software engineer",
            "programmer",
            "backend developer",
            "java developer",
        ],
        duties: &[
            "designing and writing computer programs",
            "testing and debugging software applications",
            "maintaining source code and documentation",
            "reviewing code of other developers",
            "developing web services and databases",
        ],
    },
    Occ {
        code: "2511",
        title: "Systems analysts",
        jobs: &[
            "systems analyst",
            "it business analyst",
            "solutions analyst",
        ],
        duties: &[
            "analysing user requirements for information systems",
            "designing system specifications",
            "evaluating hardware and software options",
            "modelling business processes for automation",
        ],
    },
    Occ {
        code: "2221",
        title: "Nursing professionals",
        jobs: &[
            "registered nurse",
            "staff nurse",
            "nurse practitioner",
            "ward nurse",
        ],
        duties: &[
            "administering medication to patients",
            "monitoring patients vital signs",
            "planning and providing nursing care",
            "advising patients and families on health",
        ],
    },
    Occ {
        code: "3221",
        title: "Nursing associate professionals",
        jobs: &["enrolled nurse", "practical nurse", "assistant nurse"],
        duties: &[
            "providing basic nursing care under supervision",
            "changing dressings and monitoring patients",
            "assisting registered nurses on the ward",
        ],
    },
    Occ {
        code: "2211",
        title: "Generalist medical practitioners",
        jobs: &[
            "general practitioner",
            "family doctor",
            "physician",
            "medical doctor",
        ],
        duties: &[
            "examining patients and diagnosing illness",
            "prescribing medication and treatment",
            "referring patients to specialists",
            "keeping medical records",
        ],
    },
    Occ {
        code: "2330",
        title: "Secondary education teachers",
        jobs: &[
            "secondary school teacher",
            "high school teacher",
            "maths teacher",
            "history teacher",
        ],
        duties: &[
            "teaching subjects to secondary school pupils",
            "preparing lessons and marking exams",
            "supervising pupils in class",
            "reporting pupil progress to parents",
        ],
    },
    Occ {
        code: "2341",
        title: "Primary school teachers",
        jobs: &[
            "primary school teacher",
            "elementary teacher",
            "class teacher",
        ],
        duties: &[
            "teaching reading writing and arithmetic to children",
            "planning daily lessons for young pupils",
            "organising school outings",
            "observing and assessing children",
        ],
    },
    Occ {
        code: "2310",
        title: "University and higher education teachers",
        jobs: &[
            "university lecturer",
            "professor",
            "senior lecturer",
            "associate professor",
        ],
        duties: &[
            "lecturing undergraduate and postgraduate students",
            "conducting research and publishing papers",
            "supervising doctoral theses",
            "designing university courses",
        ],
    },
    Occ {
        code: "2411",
        title: "Accountants",
        jobs: &[
            "accountant",
            "chartered accountant",
            "auditor",
            "tax accountant",
        ],
        duties: &[
            "preparing financial statements and tax returns",
            "auditing accounts and financial records",
            "advising on financial systems",
            "analysing budgets",
        ],
    },
    Occ {
        code: "3313",
        title: "Accounting associate professionals",
        jobs: &[
            "accounting technician",
            "assistant accountant",
            "accounts officer",
        ],
        duties: &[
            "maintaining ledgers and accounting records",
            "reconciling bank statements",
            "preparing invoices and payroll figures",
        ],
    },
    Occ {
        code: "4311",
        title: "Accounting and bookkeeping clerks",
        jobs: &["bookkeeper", "accounts clerk", "bookkeeping clerk"],
        duties: &[
            "recording financial transactions",
            "posting entries to ledgers",
            "checking figures and invoices",
            "filing receipts",
        ],
    },
    Occ {
        code: "4110",
        title: "General office clerks",
        jobs: &[
            "office clerk",
            "administrative clerk",
            "office assistant",
            "clerical officer",
        ],
        duties: &[
            "filing documents and records",
            "answering the telephone and taking messages",
            "photocopying and sorting mail",
            "entering data into computers",
        ],
    },
    Occ {
        code: "4120",
        title: "Secretaries (general)",
        jobs: &["secretary", "personal assistant", "office secretary"],
        duties: &[
            "typing letters and reports",
            "scheduling appointments and meetings",
            "handling correspondence",
            "taking minutes of meetings",
        ],
    },
    Occ {
        code: "4222",
        title: "Contact centre information clerks",
        jobs: &[
            "call centre agent",
            "customer service representative",
            "helpdesk operator",
        ],
        duties: &[
            "answering customer enquiries by telephone",
            "resolving complaints at a contact centre",
            "recording customer details in a database",
        ],
    },
    Occ {
        code: "5120",
        title: "Cooks",
        jobs: &["cook", "chef", "line cook", "kitchen chef"],
        duties: &[
            "preparing and cooking meals",
            "planning menus and ordering food supplies",
            "seasoning and presenting dishes",
            "keeping the kitchen clean and safe",
        ],
    },
    Occ {
        code: "5131",
        title: "Waiters",
        jobs: &["waiter", "waitress", "restaurant server", "food server"],
        duties: &[
            "taking orders from customers",
            "serving food and drinks at tables",
            "presenting bills and taking payment",
            "setting tables",
        ],
    },
    Occ {
        code: "9412",
        title: "Kitchen helpers",
        jobs: &["kitchen porter", "dishwasher", "kitchen assistant"],
        duties: &[
            "washing dishes and kitchen utensils",
            "cleaning kitchen floors and surfaces",
            "peeling and chopping vegetables",
        ],
    },
    Occ {
        code: "5223",
        title: "Shop sales assistants",
        jobs: &[
            "sales assistant",
            "shop assistant",
            "retail assistant",
            "sales clerk",
        ],
        duties: &[
            "selling goods to customers in a shop",
            "advising customers on products",
            "operating the cash register",
            "stocking shelves",
        ],
    },
    Occ {
        code: "5230",
        title: "Cashiers and ticket clerks",
        jobs: &["cashier", "checkout operator", "ticket clerk"],
        duties: &[
            "receiving payments at a till",
            "scanning goods at the checkout",
            "issuing tickets and giving change",
        ],
    },
    Occ {
        code: "5321",
        title: "Health care assistants",
        jobs: &["care assistant", "healthcare assistant", "nursing aide"],
        duties: &[
            "helping patients with personal care",
            "assisting patients to bathe and dress",
            "feeding patients and changing bed linen",
        ],
    },
    Occ {
        code: "5322",
        title: "Home-based personal care workers",
        jobs: &["home carer", "home care worker", "personal care aide"],
        duties: &[
            "caring for elderly people in their homes",
            "helping clients with daily living",
            "preparing meals for clients at home",
        ],
    },
    Occ {
        code: "5414",
        title: "Security guards",
        jobs: &["security guard", "security officer", "night watchman"],
        duties: &[
            "patrolling premises to prevent theft",
            "checking visitors at entrances",
            "monitoring alarms and cctv",
        ],
    },
    Occ {
        code: "5141",
        title: "Hairdressers",
        jobs: &["hairdresser", "hair stylist", "barber"],
        duties: &[
            "cutting and styling hair",
            "colouring and perming hair",
            "advising clients on hair care",
        ],
    },
    Occ {
        code: "7115",
        title: "Carpenters and joiners",
        jobs: &["carpenter", "joiner", "cabinet carpenter"],
        duties: &[
            "cutting and shaping wood",
            "building wooden frameworks and structures",
            "fitting doors windows and stairs",
        ],
    },
    Occ {
        code: "7126",
        title: "Plumbers and pipe fitters",
        jobs: &["plumber", "pipe fitter", "heating plumber"],
        duties: &[
            "installing and repairing water pipes",
            "fitting bathrooms and heating systems",
            "unblocking drains",
        ],
    },
    Occ {
        code: "7411",
        title: "Building and related electricians",
        jobs: &[
            "electrician",
            "building electrician",
            "electrical installer",
        ],
        duties: &[
            "installing electrical wiring in buildings",
            "testing electrical circuits",
            "repairing lighting and power systems",
        ],
    },
    Occ {
        code: "7231",
        title: "Motor vehicle mechanics and repairers",
        jobs: &[
            "car mechanic",
            "motor mechanic",
            "auto technician",
            "garage mechanic",
        ],
        duties: &[
            "repairing car engines and brakes",
            "servicing motor vehicles",
            "diagnosing faults in vehicles",
        ],
    },
    Occ {
        code: "7512",
        title: "Bakers, pastry-cooks and confectionery makers",
        jobs: &["baker", "pastry cook", "confectioner"],
        duties: &[
            "baking bread and pastries",
            "mixing dough and operating ovens",
            "decorating cakes",
        ],
    },
    Occ {
        code: "8322",
        title: "Car, taxi and van drivers",
        jobs: &["taxi driver", "van driver", "delivery driver", "chauffeur"],
        duties: &[
            "driving a taxi and collecting fares",
            "delivering parcels by van",
            "driving passengers to destinations",
        ],
    },
    Occ {
        code: "8331",
        title: "Bus and tram drivers",
        jobs: &["bus driver", "tram driver", "coach driver"],
        duties: &[
            "driving buses on scheduled routes",
            "collecting fares from passengers",
            "checking the bus before departure",
        ],
    },
    Occ {
        code: "8332",
        title: "Heavy truck and lorry drivers",
        jobs: &["lorry driver", "truck driver", "hgv driver"],
        duties: &[
            "driving heavy goods vehicles",
            "transporting freight over long distances",
            "loading and securing cargo",
        ],
    },
    Occ {
        code: "9112",
        title: "Cleaners and helpers in offices, hotels and other establishments",
        jobs: &["office cleaner", "cleaner", "hotel cleaner", "janitor"],
        duties: &[
            "cleaning offices and corridors",
            "vacuuming and mopping floors",
            "emptying bins and cleaning toilets",
        ],
    },
    Occ {
        code: "6111",
        title: "Field crop and vegetable growers",
        jobs: &["vegetable grower", "crop farmer", "arable farmer"],
        duties: &[
            "planting and harvesting crops",
            "preparing soil and sowing seeds",
            "selling produce at market",
        ],
    },
    Occ {
        code: "9211",
        title: "Crop farm labourers",
        jobs: &["farm labourer", "farm hand", "harvest worker"],
        duties: &[
            "picking fruit and vegetables",
            "weeding and watering fields",
            "loading harvested crops",
        ],
    },
    Occ {
        code: "1120",
        title: "Managing directors and chief executives",
        jobs: &[
            "managing director",
            "chief executive officer",
            "ceo",
            "general manager",
        ],
        duties: &[
            "directing the overall operations of a company",
            "setting strategy and company policy",
            "reporting to the board of directors",
        ],
    },
    Occ {
        code: "1211",
        title: "Finance managers",
        jobs: &[
            "finance manager",
            "financial controller",
            "chief financial officer",
        ],
        duties: &[
            "managing the financial operations of an organisation",
            "directing budgeting and financial reporting",
            "supervising accounting staff",
        ],
    },
    Occ {
        code: "2611",
        title: "Lawyers",
        jobs: &["lawyer", "solicitor", "barrister", "attorney"],
        duties: &[
            "advising clients on legal matters",
            "representing clients in court",
            "drafting contracts and legal documents",
        ],
    },
    Occ {
        code: "2142",
        title: "Civil engineers",
        jobs: &["civil engineer", "structural engineer", "site engineer"],
        duties: &[
            "designing bridges roads and buildings",
            "supervising construction projects",
            "calculating structural loads",
        ],
    },
    Occ {
        code: "2144",
        title: "Mechanical engineers",
        jobs: &[
            "mechanical engineer",
            "design engineer",
            "maintenance engineer",
        ],
        duties: &[
            "designing machines and engines",
            "overseeing manufacture of mechanical equipment",
            "testing mechanical systems",
        ],
    },
    Occ {
        code: "0110",
        title: "Commissioned armed forces officers",
        jobs: &[
            "army officer",
            "lieutenant",
            "captain army",
            "naval officer",
        ],
        duties: &[
            "commanding military units",
            "planning military operations",
            "training soldiers",
        ],
    },
];

/// Occupations that never occur in the historical records: the demo corrections teach them
/// (`data/demo/corrections_demo.csv`, from the first three job titles) and
/// `data/demo/new_occupations_eval.csv` tests them on the held-out titles.
const NEW_OCCS: &[Occ] = &[
    Occ {
        code: "2166",
        title: "Graphic and multimedia designers",
        jobs: &[
            "graphic designer",
            "multimedia designer",
            "web designer",
            "illustrator",
            "animation artist",
        ],
        duties: &[
            "designing visual material for print and digital media",
            "creating illustrations and animations",
            "preparing page layouts and graphics for websites",
            "selecting fonts colours and images for publications",
        ],
    },
    Occ {
        code: "3331",
        title: "Clearing and forwarding agents",
        jobs: &[
            "customs broker",
            "freight forwarder",
            "shipping agent",
            "import export clerk",
            "customs clearance agent",
        ],
        duties: &[
            "preparing customs documentation for imports and exports",
            "classifying goods into tariff groups",
            "arranging transport and insurance of cargo",
            "carrying out customs clearance procedures",
        ],
    },
    Occ {
        code: "7121",
        title: "Roofers",
        jobs: &[
            "roofer",
            "roof tiler",
            "slater",
            "thatcher",
            "roofing installer",
        ],
        duties: &[
            "laying roof tiles and slates",
            "fixing waterproof membranes to roof frames",
            "repairing leaking roofs and gutters",
            "inspecting roofs for damage",
        ],
    },
    Occ {
        code: "3257",
        title: "Environmental and occupational health inspectors",
        jobs: &[
            "health and safety inspector",
            "environmental health officer",
            "food safety inspector",
            "workplace safety inspector",
            "pollution control inspector",
        ],
        duties: &[
            "inspecting workplaces for compliance with safety regulations",
            "investigating complaints about hygiene and pollution",
            "advising employers on health and safety rules",
            "taking samples for laboratory analysis",
        ],
    },
];

const PREFIXES: &[&str] = &[
    "senior",
    "junior",
    "assistant",
    "trainee",
    "head",
    "lead",
    "part time",
];
const ABBREV: &[(&str, &str)] = &[
    ("senior", "sr"),
    ("assistant", "asst"),
    ("manager", "mgr"),
    ("engineer", "eng"),
    ("technician", "tech"),
    ("department", "dept"),
];

fn typo(rng: &mut Rng, s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() < 4 {
        return s.to_string();
    }
    let i = 1 + rng.below(chars.len() - 2);
    let mut out = chars.clone();
    match rng.below(3) {
        0 => {
            out.remove(i);
        }
        1 => out.swap(i, i - 1),
        _ => out.insert(i, chars[i]),
    }
    out.into_iter().collect()
}

fn noisy_title(rng: &mut Rng, t: &str) -> String {
    let mut s = t.to_string();
    if rng.unit() < 0.2 {
        s = format!("{} {s}", PREFIXES[rng.below(PREFIXES.len())]);
    }
    if rng.unit() < 0.25 {
        for (full, short) in ABBREV {
            s = s.replace(full, short);
        }
    }
    if rng.unit() < 0.1 {
        s = typo(rng, &s);
    }
    match rng.below(6) {
        0 => s.to_uppercase(),
        1 | 2 => s
            .split(' ')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => s,
    }
}

fn duties(rng: &mut Rng, o: &Occ) -> String {
    if rng.unit() < 0.08 {
        return String::new();
    }
    let n = 1 + rng.below(3.min(o.duties.len()));
    let mut picked: Vec<&str> = o.duties.to_vec();
    rng.shuffle(&mut picked);
    let mut s = picked[..n].join("; ");
    if rng.unit() < 0.1 && s.len() > 30 {
        let cut = s.len() / 2;
        let cut = (0..=cut)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        s.truncate(cut);
    }
    if rng.unit() < 0.05 {
        s = typo(rng, &s);
    }
    if rng.unit() < 0.1 {
        s = s.to_uppercase();
    }
    s
}

/// `title,duties` of a job of an occupation the records never show (one of its last two job
/// titles, as the held-out evaluation uses), CSV-quoted.
fn unseen_job(rng: &mut Rng, o: &Occ) -> String {
    let job = o.jobs[3 + rng.below(2)];
    let title = noisy_title(rng, job);
    format!("{},{}", csv_field(&title), csv_field(&duties(rng, o)))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Paths written by [`generate`].
#[derive(Debug, Clone)]
pub struct DemoFiles {
    /// Historical records CSV.
    pub records: PathBuf,
    /// ISCO reference CSV.
    pub reference: PathBuf,
    /// Uncoded new jobs CSV (for `predict`).
    pub new_jobs: PathBuf,
    /// Which records carry a wrong label (`row,true_isco_code,label_is_noise`), to score
    /// `cluster-outliers`.
    pub truth: PathBuf,
    /// Coders' corrections for occupations the records never show, to copy into
    /// `data/corrections/` before running `pipelines/finetune.toml`.
    pub corrections: PathBuf,
    /// Held-out titles of those occupations (`job_title,duties_description,isco_code`).
    pub new_occupations: PathBuf,
}

/// Picks a wrong code for label noise: 60 % a sibling in the same minor or sub-major group
/// when the demo has one, otherwise any other code.
fn wrong_code(rng: &mut Rng, true_idx: usize) -> &'static str {
    let code = OCCS[true_idx].code;
    let siblings: Vec<&Occ> = OCCS
        .iter()
        .filter(|o| o.code != code && o.code[..2] == code[..2])
        .collect();
    if !siblings.is_empty() && rng.unit() < 0.6 {
        return siblings[rng.below(siblings.len())].code;
    }
    loop {
        let o = &OCCS[rng.below(OCCS.len())];
        if o.code != code {
            return o.code;
        }
    }
}

/// Generates `rows` historical records (plus a few unusable ones) under `dir`.
pub fn generate(dir: &Path, rows: usize, seed: u64) -> Result<DemoFiles, Error> {
    let mut rng = Rng::new(seed);
    let write = |p: &Path, s: &str| -> Result<(), Error> {
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|source| Error::Write {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(p, s).map_err(|source| Error::Write {
            path: p.to_path_buf(),
            source,
        })
    };

    // Reference: the groups above the demo unit groups, and those unit groups.
    let mut reference = String::from("code,level,title,definition\n");
    for (level, groups) in [(1, MAJOR), (2, SUB_MAJOR), (3, MINOR)] {
        for (code, title) in groups {
            let _ = writeln!(reference, "{code},{level},{},", csv_field(title));
        }
    }
    // The new occupations have titles but no definitions: the corrections teach them.
    for o in NEW_OCCS {
        let _ = writeln!(reference, "{},4,{},", o.code, csv_field(o.title));
    }
    for o in OCCS {
        let def = format!(
            "{} perform tasks such as {}. Examples of the occupations classified here: {}.",
            o.title,
            o.duties.join("; "),
            o.jobs.join("; ")
        );
        let _ = writeln!(
            reference,
            "{},4,{},{}",
            o.code,
            csv_field(o.title),
            csv_field(&def)
        );
    }

    // Zipf weights over a seeded permutation of the occupations.
    let mut order: Vec<usize> = (0..OCCS.len()).collect();
    rng.shuffle(&mut order);
    let weights: Vec<f64> = (0..OCCS.len())
        .map(|r| 1.0 / (r as f64 + 1.0).powf(0.9))
        .collect();
    let total: f64 = weights.iter().sum();
    let mut records = String::from("job_title,duties_description,isco_code\n");
    let mut truth = String::from("row,true_isco_code,label_is_noise\n");
    let mut data_row = 0usize;
    for i in 0..rows {
        let mut x = rng.unit() * total;
        let mut k = 0;
        while k + 1 < weights.len() && x >= weights[k] {
            x -= weights[k];
            k += 1;
        }
        let oi = order[k];
        let o = &OCCS[oi];
        let job = o.jobs[rng.below(o.jobs.len())];
        let title = noisy_title(&mut rng, job);
        let d = duties(&mut rng, o);
        let code = if rng.unit() < 0.03 {
            wrong_code(&mut rng, oi)
        } else {
            o.code
        };
        let _ = writeln!(records, "{},{},{}", csv_field(&title), csv_field(&d), code);
        let _ = writeln!(truth, "{data_row},{},{}", o.code, (code != o.code) as u8);
        data_row += 1;
        // A few unusable rows, spread through the file.
        if i % 997 == 500 {
            let bad = match (i / 997) % 5 {
                0 => "shop assistant,selling goods,52231".to_string(),
                1 => "courier,delivering letters,96x1".to_string(),
                2 => ",,4110".to_string(),
                3 => "quality inspector,inspecting products,7543".to_string(),
                _ => "plumber,\"fixing pipes, drains\",7126,extra".to_string(),
            };
            records.push_str(&bad);
            records.push('\n');
            data_row += 1;
        }
    }

    let mut new_jobs = String::from("job_title,duties_description\n");
    for _ in 0..200 {
        let o = &OCCS[rng.below(OCCS.len())];
        let job = o.jobs[rng.below(o.jobs.len())];
        let title = noisy_title(&mut rng, job);
        let _ = writeln!(
            new_jobs,
            "{},{}",
            csv_field(&title),
            csv_field(&duties(&mut rng, o))
        );
    }

    // Corrections (the first three titles of each new occupation, some corrected twice with
    // a conflict that the later timestamp settles) and the held-out evaluation titles.
    let mut corrections =
        String::from("job_title,duties_description,corrected_isco_code,coder,timestamp\n");
    let mut new_occupations = String::from("job_title,duties_description,isco_code\n");
    for (k, o) in NEW_OCCS.iter().enumerate() {
        for i in 0..36 {
            let title = noisy_title(&mut rng, o.jobs[i % 3]);
            let d = duties(&mut rng, o);
            let (coder, day) = (format!("coder{}", 1 + i % 3), 1 + (k * 36 + i) % 28);
            let row = |code: &str, hour: usize| {
                format!(
                    "{},{},{code},{coder},2026-10-{day:02}T{hour:02}:00:00Z\n",
                    csv_field(&title),
                    csv_field(&d)
                )
            };
            if i % 12 == 5 {
                // A first, wrong correction, overruled later the same day.
                corrections.push_str(&row(OCCS[k].code, 9));
            }
            corrections.push_str(&row(o.code, 15));
        }
        for _ in 0..20 {
            let _ = writeln!(new_occupations, "{},{}", unseen_job(&mut rng, o), o.code);
        }
    }

    // New jobs also hold a few of the occupations the records never show, as real new
    // records do: the model is unsure of them, so the review page has something to show.
    for o in NEW_OCCS {
        for _ in 0..2 {
            let _ = writeln!(new_jobs, "{}", unseen_job(&mut rng, o));
        }
    }

    let files = DemoFiles {
        records: dir.join("raw/historical_records.csv"),
        reference: dir.join("reference/isco08_demo.csv"),
        new_jobs: dir.join("demo/new_jobs.csv"),
        truth: dir.join("demo/records_truth.csv"),
        corrections: dir.join("demo/corrections_demo.csv"),
        new_occupations: dir.join("demo/new_occupations_eval.csv"),
    };
    write(&files.truth, &truth)?;
    write(&files.records, &records)?;
    write(&files.reference, &reference)?;
    write(&files.new_jobs, &new_jobs)?;
    write(&files.corrections, &corrections)?;
    write(&files.new_occupations, &new_occupations)?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_complete() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let fa = generate(a.path(), 2000, 1).unwrap();
        let fb = generate(b.path(), 2000, 1).unwrap();
        let ra = std::fs::read_to_string(&fa.records).unwrap();
        assert_eq!(ra, std::fs::read_to_string(&fb.records).unwrap());
        // 2000 good rows + 2 unusable ones + header.
        assert_eq!(ra.lines().count(), 2003);
        let tax = classifier::Taxonomy::load(&fa.reference).unwrap();
        assert_eq!(tax.units().count(), OCCS.len() + NEW_OCCS.len());
        let corr = std::fs::read_to_string(&fa.corrections).unwrap();
        assert_eq!(corr.lines().count(), 1 + NEW_OCCS.len() * (36 + 3));
        // Every group above a unit group has a title, so a coarser code has one too.
        for o in OCCS.iter().chain(NEW_OCCS) {
            for digits in 1..=3 {
                let parent = classifier::Taxonomy::parent(o.code, digits);
                assert!(
                    !tax.title(parent).is_empty(),
                    "{parent}, a parent of {}, has no title",
                    o.code
                );
            }
        }
    }
}
